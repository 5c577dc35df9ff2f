"""`callstream reliability`: the never-stuck promise, measured on the embedded stack.

Three parts, each printed as a markdown table (docs/RELIABILITY.md and docs/BENCHMARKS.md quote them):
- bad input: each class of poison message followed by a good chunk on the same partition; the outcome
  and reason, the time to reach it, the delay it added to the good chunk behind it, worker peak RSS;
- memory: worker peak RSS (and its ffmpeg children's) for 5-s chunks, a 45-minute call published as
  one chunk, a 2-hour audio-only call and an 8192x8192 frame, plus how the other partitions flowed
  meanwhile;
- faults: the fault suite (callstream_lab/bench/faults.py): each fault at seeded points of progress,
  every acknowledged offset judged for exactly one end.

Workers are started from `--code DIR` when given (another checkout, for before/after figures).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from callstream_lab.bench.faults import FAULTS, Suite, broken, run_suite
from callstream_lab.bench.runner import _descendants, status_mb
from callstream_lab.stack import procs
from callstream_lab.synth import generate_call
from pipeline.contract import ChunkMeta
from pipeline.ingest.producer import ChunkPublisher
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings
from pipeline.store.db import sync_engine


class RssSampler(threading.Thread):
    """Peak RSS of a process (VmHWM) and the peak sum of its children's RSS (ffmpeg), sampled."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.children_peak = 0.0
        self.worker_peak = 0.0
        self._stop_event = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.worker_peak = max(self.worker_peak, status_mb(self.pid))
            kids = [p for p in _descendants(self.pid) if p != self.pid]
            self.children_peak = max(self.children_peak, sum(status_mb(p, "VmRSS:") for p in kids))
            time.sleep(self.every)

    def stop(self) -> tuple[float, float]:
        self._stop_event.set()
        self.join(timeout=2)
        return self.worker_peak, self.children_peak


@dataclass
class Harness:
    base: Settings
    code: Path | None
    log: Callable[[str], None]

    def __post_init__(self) -> None:
        self.engine = sync_engine(self.base)
        self.workdir = self.base.state_dir / "bench" / "reliability"
        self.workdir.mkdir(parents=True, exist_ok=True)

    def isolated(self, tag: str, **extra: str) -> tuple[Settings, dict[str, str]]:
        slug = "".join(c if c.isalnum() else "-" for c in tag.lower())
        run = f"rel-{slug}-{uuid.uuid4().hex[:6]}"
        env = {"CALLSTREAM_CHUNKS_TOPIC": f"{run}.chunks", "CALLSTREAM_DLQ_TOPIC": f"{run}.dlq",
               "CALLSTREAM_APP_ID": run, **extra}
        return Settings.from_env({**os.environ, **env}), env

    def start_worker(self, settings: Settings, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        path = settings.state_dir / "logs" / f"{name}.log"
        proc = procs.start_worker_process(settings.state_dir, name, env, cwd=self.code)
        deadline = time.time() + 240
        while "Worker]: Ready" not in path.read_text(errors="replace"):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"worker {name} did not start; see {path}")
            time.sleep(0.3)
        time.sleep(2)  # partitions assigned
        return proc

    @staticmethod
    def stop_worker(proc: subprocess.Popen[bytes]) -> float:
        return procs.stop_process(proc)

    def ledger(self, topic: str) -> list[Any]:
        q = text("""SELECT call_id, seq, status, error_reason, partition, "offset", segments,
                           extract(epoch FROM processed_at)::float8 AS done,
                           extract(epoch FROM published_at)::float8 AS pub
                    FROM chunks WHERE topic = :t""")
        with self.engine.connect() as conn:
            return list(conn.execute(q, {"t": topic}).all())

    def wait_settled(self, topic: str, n: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.ledger(topic)) >= n:
                return True
            if proc is not None and proc.poll() is not None:
                return False
            time.sleep(0.25)
        return False


# --- media -------------------------------------------------------------------------------------------

def media(h: Harness) -> dict[str, Path]:
    """Generated once into .callstream/bench/reliability (reused by later runs)."""
    ff, d = ffmpeg_exe(), h.workdir
    out: dict[str, Path] = {}
    base = d / "call60.mp4"
    if not base.exists():
        generate_call(ff, base, seconds=60)
    out["call60"] = base
    short = d / "short.mkv"
    if not short.exists():
        first = cut(ff, generate_call(ff, d / "short.mp4", seconds=2.4), 5.0)[0].path
        short.write_bytes(first.read_bytes())
    out["short"] = short
    long = d / "call45min.mkv"
    if not long.exists():
        # A recorder's whole-call upload at a modest bitrate: 45 minutes of 640x360 under the 64 MB limit.
        h.log("  generating a 45-minute call (a 60-s call at 140 kb/s, looped by stream copy) ...")
        lean = d / "call60-lean.mkv"
        subprocess.run([ff, "-y", "-loglevel", "error", "-i", str(base), "-c:v", "libx264", "-preset", "veryfast",
                        "-b:v", "100k", "-maxrate", "140k", "-bufsize", "280k", "-g", "30", "-c:a", "aac",
                        "-b:a", "32k", str(lean)], check=True)
        subprocess.run([ff, "-y", "-loglevel", "error", "-stream_loop", "44", "-i", str(lean), "-c", "copy",
                        "-t", "2700", str(long)], check=True)
    out["call45min"] = long
    audio = d / "audio2h.mka"
    if not audio.exists():
        h.log("  generating a 2-hour audio-only call ...")
        subprocess.run([ff, "-y", "-loglevel", "error", "-stream_loop", "119", "-i", str(base), "-vn",
                        "-c:a", "aac", "-b:a", "48k", "-t", "7200", str(audio)], check=True)
    out["audio2h"] = audio
    huge = d / "frame8192.mkv"
    if not huge.exists():
        subprocess.run([ff, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=8192x8192:rate=2",
                        "-t", "2", "-c:v", "mjpeg", "-q:v", "10", str(huge)], check=True)
    out["frame8192"] = huge
    return out


# --- part 1: bad input -------------------------------------------------------------------------------

def _h(call: str, **kw: Any) -> list[tuple[str, bytes]]:
    return ChunkMeta(call, 0, 0, **kw).headers()


def poison_cases(good: bytes, bucket: str) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    sub = lambda hs, k, v: [(a, v if a == k else b) for a, b in hs]  # noqa: E731
    return [
        ("start-ms 99999999999999999999", good, sub(_h("p1"), "start-ms", b"99999999999999999999")),
        ("duration-ms 24 h on a 2.4-s chunk", good, _h("p2", duration_ms=86_400_000, layout="customer")),
        ("claim-check s3://otherbucket/../../etc/passwd", b"", _h("p3", claim_check="s3://otherbucket/../../etc/passwd")),
        ("claim-check to another bucket", b"", _h("p4", claim_check="s3://secretbucket/private/call.mkv")),
        ("claim-check to a missing object", b"", _h("p5", claim_check=f"s3://{bucket}/calls/none/000000.mkv")),
        ("ffconcat script", b"ffconcat version 1.0\nfile some.mkv\n", _h("p6")),
        ("HLS playlist", b"#EXTM3U\n#EXTINF:2,\nhttp://127.0.0.1:1/a.ts\n", _h("p7")),
        ("repeated header", good, _h("p8") + [("SEQ", b"1")]),
        ("10 kB header value", good, _h("p9") + [("content-type", b"x" * 10_000)]),
        ("random bytes, 20 MB", os.urandom(20_000_000), _h("p10")),
        ("truncated MKV", good[: len(good) // 2], _h("p11")),
        ("schema 2", good, sub(_h("p12"), "callstream-schema", b"2")),
        ("empty value", b"", _h("p13")),
    ]


def bad_input(h: Harness, m: dict[str, Path]) -> list[dict[str, Any]]:
    good = m["short"].read_bytes()
    # A 32 MB inline limit lets the publisher send the 20 MB value as it is (the broker takes 64 MB).
    settings, env = h.isolated("bad", CALLSTREAM_PARTITIONS="1", CALLSTREAM_INLINE_LIMIT_BYTES="32000000")
    worker = h.start_worker(settings, env, "rel-bad")
    sampler = RssSampler(worker.pid)
    rows = []
    try:
        with ChunkPublisher(settings) as pub:
            # Baseline: the median latency of a good chunk alone, after a warm-up one.
            base = []
            for j in range(4):
                n = len(h.ledger(settings.chunks_topic))
                t0 = time.time()
                pub.publish_raw(good, f"g-base{j}".encode(), _h(f"g-base{j}", layout="customer"), partition=0)
                pub.wait()
                h.wait_settled(settings.chunks_topic, n + 1, 120)
                base.append((max(r.done for r in h.ledger(settings.chunks_topic)) - t0) * 1000)
            base_ms = sorted(base[1:])[1]
            for i, (name, value, headers) in enumerate(poison_cases(good, settings.claim_check_bucket)):
                n = len(h.ledger(settings.chunks_topic))   # = the poison's offset on the one partition
                t0 = time.time()
                pub.publish_raw(value, dict(headers).get("call-id", b"x"), headers, partition=0)
                pub.publish_raw(good, f"g{i}".encode(), _h(f"g{i}", layout="customer"), partition=0)
                pub.wait()
                ok = h.wait_settled(settings.chunks_topic, n + 2, 600, worker)
                led = {r.offset: r for r in h.ledger(settings.chunks_topic)}
                p, g = led.get(n), led.get(n + 1)
                rows.append({"case": name, "outcome": (p.status + (f" ({p.error_reason})" if p.error_reason else ""))
                             if p else "NOT SETTLED", "seconds": round(p.done - t0, 2) if p else None,
                             "good_delay_ms": round((g.done - t0) * 1000 - base_ms) if g and ok else None,
                             "worker_peak_mb": round(status_mb(worker.pid))})
                h.log(f"  {rows[-1]}")
    finally:
        sampler.stop()
        h.stop_worker(worker)
    return rows


# --- part 2: memory ----------------------------------------------------------------------------------

def memory(h: Harness, m: dict[str, Path], cases: list[str], timeout: float) -> list[dict[str, Any]]:
    out = []
    for case in cases:
        settings, env = h.isolated(f"mem-{case}", CALLSTREAM_PARTITIONS="4")
        worker = h.start_worker(settings, env, f"rel-mem-{settings.app_id}")
        sampler = RssSampler(worker.pid)
        try:
            t0 = time.time()
            side_thread = None
            with ChunkPublisher(settings) as pub:
                if case == "5-s chunks":
                    chunks = cut(ffmpeg_exe(), m["call60"], 5.0)
                    for c in chunks:
                        pub.publish(ChunkMeta("mem-5s", c.seq, c.start_ms, duration_ms=c.end_ms - c.start_ms,
                                              end_of_call=c.seq == len(chunks) - 1), c.path.read_bytes())
                    expect = len(chunks)
                elif case == SIDE_ALONE:
                    expect = 0
                else:
                    path = {"45-min one-chunk call": m["call45min"], "2-h audio-only call": m["audio2h"],
                            "8192x8192 frame": m["frame8192"]}[case]
                    pub.publish(ChunkMeta(f"mem-{uuid.uuid4().hex[:4]}", 0, 0, end_of_call=True), path.read_bytes())
                    expect = 1
                pub.wait()
            if case != "5-s chunks":
                # Meanwhile live calls on the other partitions: short chunks at a steady pace.
                side_thread = threading.Thread(target=_publish_side, args=(settings, m["short"].read_bytes()))
                side_thread.start()
                expect += SIDE_CHUNKS
            finished = h.wait_settled(settings.chunks_topic, expect, timeout, worker)
            if side_thread is not None:
                side_thread.join()
            peak, kids = sampler.stop()
            led = h.ledger(settings.chunks_topic)
            side = sorted((r.done - r.pub) * 1000 for r in led if r.call_id.startswith("side-"))
            main = [r for r in led if not r.call_id.startswith("side-")]
            row = {"case": case, "worker_peak_mb": round(peak), "ffmpeg_peak_mb": round(kids),
                   "outcome": ",".join(sorted({r.status + (f" ({r.error_reason})" if r.error_reason else "")
                                               for r in main})) or ("-" if case == SIDE_ALONE else "not settled"),
                   "seconds": round(max((r.done for r in main), default=t0) - t0, 1) if main else "-",
                   "finished": finished}
            log_text = (settings.state_dir / "logs" / f"rel-mem-{settings.app_id}.log").read_text(errors="replace")
            row["loop_blocked_warnings"] = log_text.count("event loop blocked")
            if side:
                row["live_chunks_done"] = f"{len(side)}/{SIDE_CHUNKS}"
                row["live_p50_ms"] = round(side[len(side) // 2])
                row["live_p95_ms"] = round(side[min(len(side) - 1, int(len(side) * 0.95))])
            out.append(row)
            h.log(f"  {row}")
        finally:
            sampler.stop()
            h.stop_worker(worker)
    return out


SIDE_ALONE = "live chunks alone"
SIDE_CHUNKS = 50
SIDE_EVERY_S = 0.4   # 2.4 s of media every 0.4 s: 6 video-s/s, about a third of this machine's capacity


def _publish_side(settings: Settings, payload: bytes) -> None:
    with ChunkPublisher(settings, create_topics=False) as pub:
        t0 = time.time()
        for i in range(SIDE_CHUNKS):
            time.sleep(max(0.0, t0 + 1.0 + i * SIDE_EVERY_S - time.time()))
            pub.publish(ChunkMeta(f"side-{i}", 0, 0, layout="customer"), payload)
            pub.flush()
        pub.wait()


# --- part 3: faults: callstream_lab/bench/faults.py ---------------------------------------------------

def markdown(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run(settings: Settings, parts: list[str], code: Path | None, memory_cases: list[str], calls: int,
        timeout: float, log: Callable[[str], None] = print, faults: list[str] | None = None,
        seeds: int = 5, workers: int = 2) -> tuple[str, bool]:
    """The report, and whether every fault run kept every promise (callstream_lab/bench/faults.py)."""
    h = Harness(settings, code, log)
    m = media(h)
    out = []
    if "bad" in parts:
        log("bad input, each followed by a good chunk on the same partition ...")
        out.append(markdown("Bad input", bad_input(h, m)))
    if "memory" in parts:
        log("memory ...")
        out.append(markdown("Memory", memory(h, m, memory_cases, timeout)))
    ok = True
    if "faults" in parts:
        log(f"fault injection: {seeds} point(s) of progress per fault, {calls} calls of 4 chunks, {workers} workers")
        suite = Suite(os.environ, cut(ffmpeg_exe(), m["call60"], 5.0)[:4], log, code, group=workers)
        rows = run_suite(suite, faults if faults is not None else list(FAULTS[1:]), seeds, calls)
        ok = not any(broken(r) for r in rows)
        out.append(markdown("Faults under load", rows))
    return "\n".join(out), ok
