"""Pipeline runs through the real broker, workers, Triton and Postgres, with figures read back from the
chunk ledger (timings per chunk, publication and commit times) and Triton's metrics (batch sizes)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import text

from callstream_lab.bench.dashboard import Scraper, render
from callstream_lab.bench.workload import Template, Workload
from callstream_lab.stack import procs
from callstream_lab.stack.procs import start_worker_process, stop_process
from callstream_lab.stack.triton import NAME as TRITON
from pipeline.contract import ChunkMeta
from pipeline.ingest.producer import ChunkPublisher
from pipeline.settings import Settings
from pipeline.store.db import sync_engine

# Bench calls show the same smiling face throughout: this rule fires on each call's third segment.
BENCH_RULES = """
[[rule]]
name = "bench-customer-happy"
labels = ["happy"]
at_least = 3
of_last = 5
"""


@dataclass
class RunResult:
    workers: int
    chunks: int
    video_seconds: float
    wall_seconds: float
    latencies_ms: np.ndarray
    breakdown_ms: dict[str, float]
    batch_sizes: dict[str, float]
    worker_peak_rss_mb: list[float] = field(default_factory=list)
    alert_latencies_ms: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)   # CPU seconds used during the run, by whom

    @property
    def throughput(self) -> float:
        return self.video_seconds / self.wall_seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def status_mb(pid: int, field: str = "VmHWM:") -> float:
    """A memory line of /proc/PID/status in MB: VmHWM (peak RSS, the default) or VmRSS (now)."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children.get(p, [])
    return seen


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and of their children already reaped (ffmpeg)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick   # utime, stime, cutime, cstime
    return total


def machine_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine so far (all cores, /proc/stat). Busy leaves out
    idle, iowait and steal: what the per-process figures leave out of it is the broker, its object
    store, the publisher and the kernel. Steal is time the hypervisor gave the cores to someone else:
    on a shared VM it can take a fifth of a run, and a run that lost much of it reads slow."""
    ticks = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    steal = ticks[7] if len(ticks) > 7 else 0
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - ticks[3] - ticks[4] - steal) / tick, steal / tick


def cpu_snapshot(settings: Settings, workers: list[subprocess.Popen]) -> dict[str, float]:
    """CPU seconds so far: the workers with their ffmpeg children, Triton with its backend stubs, and
    the whole machine."""
    pid = procs.running_pid(settings.state_dir, TRITON)
    worker_pids = [p for w in workers for p in _descendants(w.pid)]
    busy, steal = machine_seconds()
    return {"worker_and_ffmpeg": cpu_seconds(worker_pids), "triton": cpu_seconds(_descendants(pid) if pid else []),
            "machine": busy, "stolen": steal}


def triton_peak_rss_mb(settings: Settings) -> float:
    """Server plus its Python-backend stub processes (each model instance is its own process)."""
    pid = procs.running_pid(settings.state_dir, TRITON)
    return sum(status_mb(p) for p in _descendants(pid)) if pid else 0.0


def triton_counts(settings: Settings) -> dict[str, tuple[float, float]]:
    """model -> (inferences, executions); their ratio is the batch size Triton actually formed."""
    url = f"http://127.0.0.1:{settings.triton_metrics_port}/metrics"
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return {}
    counts: dict[str, list[float]] = {}
    for metric, idx in (("nv_inference_count", 0), ("nv_inference_exec_count", 1)):
        for m in re.finditer(rf'^{metric}{{model="([^"]+)"[^}}]*}} ([0-9.e+]+)', body, re.M):
            counts.setdefault(m.group(1), [0.0, 0.0])[idx] += float(m.group(2))
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _batch_sizes(before: dict[str, tuple[float, float]],
                 after: dict[str, tuple[float, float]]) -> dict[str, float]:
    out = {}
    for model, (inf, exe) in after.items():
        b_inf, b_exe = before.get(model, (0.0, 0.0))
        if exe - b_exe > 0:
            out[model] = (inf - b_inf) / (exe - b_exe)
    return out


class Bench:
    """`code`: start the workers from this checkout instead (before/after figures on the same stack)."""

    def __init__(self, settings: Settings, log: Callable[..., None] = print, code: Path | None = None) -> None:
        self.base = settings
        self.log = log
        self.code = code
        self.engine = sync_engine(settings)

    def _isolated(self, tag: str) -> tuple[Settings, dict[str, str]]:
        run = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
        env = {"CALLSTREAM_CHUNKS_TOPIC": f"{run}.chunks", "CALLSTREAM_DLQ_TOPIC": f"{run}.dlq",
               "CALLSTREAM_ALERTS_TOPIC": f"{run}.alerts", "CALLSTREAM_APP_ID": run, "CALLSTREAM_METRICS_PORT": "0"}
        return Settings.from_env({**os.environ, **env}), env

    def _start_workers(self, settings: Settings, env: dict[str, str], n: int, tag: str,
                       metrics_ports: list[int] | None = None) -> list[subprocess.Popen]:
        ports = metrics_ports or [0] * n
        workers = [start_worker_process(settings.state_dir, f"{tag}-w{i}",
                                        {**env, "CALLSTREAM_METRICS_PORT": str(ports[i])}, cwd=self.code)
                   for i in range(n)]
        logs = [settings.state_dir / "logs" / f"{tag}-w{i}.log" for i in range(n)]
        deadline = time.time() + 180
        while time.time() < deadline:
            if all(log.exists() and "Worker]: Ready" in log.read_text(errors="replace") for log in logs):
                break
            if any(w.poll() is not None for w in workers):
                raise RuntimeError(f"a worker exited while starting; see {logs}")
            time.sleep(0.5)
        else:
            raise RuntimeError(f"workers not ready; see {logs}")
        return workers

    def _wait_done(self, topic: str, calls: str, expected: int, timeout: float) -> None:
        """Until `expected` chunks of the calls whose ids start with `calls` are in the ledger."""
        deadline = time.time() + timeout
        q = text("SELECT count(*) FROM chunks WHERE topic = :t AND call_id LIKE :p")
        while time.time() < deadline:
            with self.engine.connect() as conn:
                if conn.execute(q, {"t": topic, "p": f"{calls}%"}).scalar_one() >= expected:
                    return
            time.sleep(0.25)
        raise RuntimeError(f"only part of {expected} chunks processed after {timeout}s")

    def _collect(self, topic: str, calls: str, workers: list[subprocess.Popen], n_workers: int, video_s: float,
                 before: dict, first_publish: float) -> RunResult:
        q = text("""SELECT extract(epoch FROM processed_at)::float8 AS done,
                           extract(epoch FROM published_at)::float8 AS pub,
                           fetch_ms, decode_ms, inference_ms, db_ms, status, error_reason
                    FROM chunks WHERE topic = :t AND call_id LIKE :p""")
        with self.engine.connect() as conn:
            rows = conn.execute(q, {"t": topic, "p": f"{calls}%"}).all()
        failed = [r for r in rows if r.status != "done"]
        if failed:
            reasons = sorted({r.error_reason or r.status for r in failed})
            raise RuntimeError(f"{len(failed)} chunks failed during the benchmark ({', '.join(reasons)}): "
                               "`callstream dlq` lists them")
        lat = np.array([(r.done - r.pub) * 1000 for r in rows])
        parts = {k: float(np.mean([getattr(r, k) or 0 for r in rows]))
                 for k in ("fetch_ms", "decode_ms", "inference_ms", "db_ms")}
        parts["broker_and_queue_ms"] = float(np.mean(lat)) - sum(parts.values())
        wall = max(r.done for r in rows) - first_publish
        rss = [status_mb(w.pid) for w in workers]
        return RunResult(n_workers, len(rows), video_s, wall, lat, parts,
                         _batch_sizes(before, triton_counts(self.base)), rss)

    def _stop(self, workers: list[subprocess.Popen]) -> None:
        for w in workers:
            w.terminate()
        for w in workers:
            stop_process(w)

    def capacity(self, work: Workload, n_workers: int, min_wall_s: float = 30.0, repeats: int = 3,
                 calls: int | None = None) -> list[RunResult]:
        """Publish a backlog at once to warmed-up workers; time from first publication to last commit.
        Each run is sized by time: enough calls for `min_wall_s` of wall time at the throughput seen so
        far (the warm-up's first, then the previous run's), `repeats` runs on the same workers so their
        spread can be read. `calls` fixes the count instead."""
        settings, env = self._isolated(f"cap{n_workers}")
        workers = self._start_workers(settings, env, n_workers, f"bench-cap{n_workers}")
        app = settings.app_id
        results: list[RunResult] = []
        try:
            with ChunkPublisher(settings) as pub:
                # Warm-up: every template once, off the clock; its pace sizes the first run.
                t = time.time()
                for i, tpl in enumerate(work.templates):
                    self._publish_call(pub, tpl, f"{app}-warm-call{i}")
                pub.flush()
                self._wait_done(settings.chunks_topic, f"{app}-warm-", sum(len(t.uploads) for t in work.templates),
                                600)
                pace = sum(t.seconds for t in work.templates) / (time.time() - t)
                attempt = 0
                while len(results) < repeats and attempt < repeats + 2:
                    n = calls or max(len(work.templates), math.ceil(min_wall_s * pace / work.mean_call_seconds))
                    prefix = f"{app}-r{attempt}-"
                    attempt += 1
                    before = triton_counts(self.base)
                    cpu = cpu_snapshot(self.base, workers)
                    first = time.time()
                    for i in range(n):
                        self._publish_call(pub, work.call(i), f"{prefix}call{i}")
                    pub.flush()
                    expected = sum(len(work.call(i).uploads) for i in range(n))
                    self._wait_done(settings.chunks_topic, prefix, expected, 3600)
                    video_s = sum(work.call(i).seconds for i in range(n))
                    result = self._collect(settings.chunks_topic, prefix, workers, n_workers, video_s, before, first)
                    after = cpu_snapshot(self.base, workers)
                    result.cpu_s = {k: round(after[k] - cpu[k], 1) for k in cpu}
                    pace = result.throughput
                    short = calls is None and result.wall_seconds < 0.8 * min_wall_s
                    self.log(f"    run {attempt}: {n} calls, {result.chunks} chunks in {result.wall_seconds:.1f} s: "
                             f"{result.throughput:.2f} video-s/s" + (" (shorter than asked: it only sizes the next)"
                                                                     if short else ""))
                    if not short:
                        results.append(result)
                if not results:
                    results.append(result)   # a machine too slow to size a run: the last one, as it is
            return results
        finally:
            self._stop(workers)

    def latency(self, work: Workload, live_calls: int, duration_s: float, n_workers: int = 1,
                dashboard: Path | None = None) -> RunResult:
        """`live_calls` concurrent calls, each publishing its next chunk when that chunk has been recorded
        (starts staggered over a chunk length, calls cycling through the workload's recordings, which
        repeat when the run is longer): a steady offered load of `live_calls` video-s per second.
        A live alert rule that the generated faces satisfy fires once per call: its latency is measured
        from the moment the window's last segment was recorded to the alert's publication. With
        `dashboard`, the workers' and Triton's metrics are scraped and rendered there."""
        settings, env = self._isolated(f"lat{n_workers}")
        rules = settings.state_dir / "bench" / "alert-rules.toml"
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(BENCH_RULES)
        env["CALLSTREAM_ALERT_RULES"] = str(rules)
        ports = [procs.free_port() for _ in range(n_workers)]
        workers = self._start_workers(settings, env, n_workers, f"bench-lat{n_workers}", ports)
        scraper = Scraper([f"http://127.0.0.1:{p}/metrics" for p in ports]
                          + [f"http://127.0.0.1:{self.base.triton_metrics_port}/metrics"])
        scraper.start()
        chunk_s = work.chunk_seconds
        try:
            schedule: list[tuple[float, ChunkMeta, bytes]] = []
            video_s = 0.0    # call seconds published: each call up to its last chunk's end
            for c in range(live_calls):
                offset = chunk_s * c / live_calls
                tpl = work.call(c)
                loops = max(1, math.ceil(duration_s / tpl.seconds))
                for loop in range(loops):
                    for meta, payload, recorded in tpl.metas(f"{settings.app_id}-live{c}", loop, loop == loops - 1):
                        if recorded <= duration_s + 1e-6 or loop == 0:
                            schedule.append((offset + recorded, meta, payload))
                video_s += max(at for at, m, _ in schedule if m.call_id == f"{settings.app_id}-live{c}") - offset
            schedule.sort(key=lambda x: x[0])
            with ChunkPublisher(settings) as pub:
                before = triton_counts(self.base)
                t0 = time.time()
                for at, meta, payload in schedule:
                    delay = t0 + at - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    pub.publish(meta, payload)
                    pub.flush()
            self._wait_done(settings.chunks_topic, f"{settings.app_id}-live", len(schedule), 600)
            time.sleep(4)  # a last scrape after the last commit
            result = self._collect(settings.chunks_topic, f"{settings.app_id}-live", workers, n_workers,
                                   video_s, before, t0 + chunk_s)
            result.alert_latencies_ms = self._alert_latencies(settings.app_id, t0, chunk_s, live_calls)
            return result
        finally:
            scraper.stop()
            self._stop(workers)
            if dashboard is not None and len(scraper.snapshots) > 5:
                render(scraper.snapshots, dashboard, f"callstream, {live_calls} live calls, {n_workers} worker(s)")

    def _alert_latencies(self, app_id: str, t0: float, chunk_s: float, live_calls: int) -> list[float]:
        """Per call: publication time minus when the alert window's last segment was recorded (call c's
        recording starts at t0 + c/live_calls of a chunk length; see the schedule above)."""
        deadline = time.time() + 30
        q = text("""SELECT call_id, window_end_ms, extract(epoch FROM published_at)::float8 AS published
                    FROM alerts WHERE call_id LIKE :p""")
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(q, {"p": f"{app_id}-live%"}).all()
            if (len(rows) >= live_calls and all(r.published for r in rows)) or time.time() > deadline:
                break
            time.sleep(0.5)
        out = []
        for r in rows:
            if r.published is None:
                continue
            c = int(r.call_id.rsplit("live", 1)[1])
            recorded = t0 + chunk_s * c / live_calls + r.window_end_ms / 1000
            out.append((r.published - recorded) * 1000)
        return out

    @staticmethod
    def _publish_call(pub: ChunkPublisher, tpl: Template, call_id: str) -> None:
        for meta, payload, _ in tpl.metas(call_id):
            pub.publish(meta, payload)
