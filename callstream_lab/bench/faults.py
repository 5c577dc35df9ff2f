"""The fault suite: every published offset reaches exactly one end, whatever fails and whenever.

One run: two workers (or `group`) in one group, `calls` calls of four 5-s chunks (every chunk through the claim
check, so the object store is on the path), one fault injected once a seeded number of chunks is
settled (its point of progress). Then, from outside the workers:

- every offset the broker acknowledged to the publisher (its RecordMetadata, not the broker's end
  offsets, which the embedded broker answers below the committed ones) has one ledger row;
- a `failed` row has its dead letter on the DLQ topic (matched by `dlq-source`) and a `done` row has
  none; a dead letter sent twice is counted apart (the DLQ is at least once);
- the group's committed offset of every partition reaches the last published offset + 1;
- the rows equal a fault-free run's (same grid cells and media per call, same labels);
- no partition has unsettled offsets `STALL_BOUND_S` after the dependency is back.

Faults: SIGKILL and SIGSTOP (past the group session) of a worker; SIGKILL of Triton, Postgres, the
object store and the broker, each restarted after `pause_s`; and a worker SIGKILLed while its
messages wait on a Triton that is down (the backoff path).
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from callstream_lab.stack import objectstore, postgres, procs, triton
from callstream_lab.stack.control import kafka_service
from pipeline.contract import H_DLQ_SOURCE, ChunkMeta
from pipeline.ingest.producer import ChunkPublisher
from pipeline.ingest.security import kafka_python_kwargs
from pipeline.ingest.topics import ensure_topics
from pipeline.media.cut import ChunkFile
from pipeline.settings import Settings
from pipeline.store.db import sync_engine

STALL_BOUND_S = 120.0       # a partition with unsettled offsets this long after recovery is stalled
SIGSTOP_S = 20.0            # past the group session (6 s): the stopped worker's partitions move
def services(settings: Settings) -> dict[str, tuple[str, Callable[[Settings], None]]]:
    kafka = kafka_service(settings)
    return {"Triton": (triton.NAME, triton.start), "Postgres": (postgres.NAME, postgres.start),
            "object store": (objectstore.NAME, objectstore.start), "broker": (kafka.NAME, kafka.start)}
FAULTS = ("none", "worker SIGKILL", "worker SIGSTOP", "Triton", "Postgres", "object store", "broker",
          "worker SIGKILL while waiting on Triton", "rolling restart")
NAMES = ("a", "b", "c", "d", "e", "f")
ROLLING_GAP_S = 10.0        # between one worker back and the next one stopped, as a deploy would pace it


@dataclass
class Landed:
    partition: int
    offset: int
    at: float = 0.0     # when the broker acknowledged it


@dataclass
class Suite:
    """The stack under test: `base_env` has its settings (os.environ for `callstream reliability`, the
    test stack's environment in the e2e suite); workers start from `code` when given."""
    base_env: Mapping[str, str]
    chunks: list[ChunkFile]
    log: Callable[[str], None] = print
    code: Path | None = None
    reference: dict[int, list[tuple[Any, ...]]] | None = None
    group: int = 2            # workers in the consumer group (a rolling restart restarts each in turn)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)   # when each worker stopped (rolling restart, SIGKILL)

    def __post_init__(self) -> None:
        self.base = Settings.from_env(dict(self.base_env))
        self.engine = sync_engine(self.base)
        self.payloads = [c.path.read_bytes() for c in self.chunks]
        self._seen: dict[str, dict[tuple[int, int], Any]] = {}
        # The services are restarted as `callstream up` starts them: a DATABASE_URL that names the
        # embedded server (the test stack sets one) must not stop it from starting the embedded one.
        ours = procs.running_pid(self.base.state_dir, postgres.NAME) is not None
        self.services = Settings.from_env({k: v for k, v in self.base_env.items() if k != "DATABASE_URL"}) \
            if ours else self.base

    # --- the run's pieces ------------------------------------------------------------------------
    def isolated(self, tag: str) -> tuple[Settings, dict[str, str]]:
        run = f"flt-{tag}-{uuid.uuid4().hex[:6]}"
        env = {**self.base_env, "CALLSTREAM_CHUNKS_TOPIC": f"{run}.chunks", "CALLSTREAM_DLQ_TOPIC": f"{run}.dlq",
               "CALLSTREAM_ALERTS_TOPIC": f"{run}.alerts", "CALLSTREAM_APP_ID": run,
               "CALLSTREAM_INLINE_LIMIT_BYTES": "50000", "CALLSTREAM_RETRY_MAX_S": "2",
               "CALLSTREAM_METRICS_PORT": "0"}
        return Settings.from_env(env), env

    def start_worker(self, settings: Settings, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        path = settings.state_dir / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        proc = procs.start_worker_process(settings.state_dir, name, env, cwd=self.code)
        self.workers.append(proc)
        deadline = time.time() + 240
        while "Worker]: Ready" not in path.read_text(errors="replace"):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"worker {name} did not start; see {path}")
            time.sleep(0.3)
        return proc

    def ledger(self, topic: str) -> dict[tuple[int, int], Any]:
        """The run's ledger rows by offset; while Postgres is down, what was seen last."""
        q = text("""SELECT partition, "offset", status, dead_lettered_at IS NOT NULL AS sent,
                           extract(epoch FROM processed_at)::float8 AS at
                    FROM chunks WHERE topic = :t""")
        try:
            with self.engine.connect() as conn:
                self._seen[topic] = {(r.partition, r.offset): r for r in conn.execute(q, {"t": topic})}
        except OperationalError:
            pass
        return self._seen.get(topic, {})

    def rows(self, prefix: str) -> dict[int, list[tuple[Any, ...]]]:
        """Per call index: its rows as comparable tuples (grid cell, media, label)."""
        q = text("""SELECT call_id, participant_id, start_ms, end_ms, media, label, face_found, speech_found
                    FROM emotion_segments WHERE call_id LIKE :p ORDER BY call_id, participant_id, start_ms""")
        out: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        with self.engine.connect() as conn:
            for r in conn.execute(q, {"p": f"{prefix}-%"}):
                out[int(r.call_id.rsplit("-", 1)[1])].append(tuple(r)[1:])
        return dict(out)

    def publish(self, settings: Settings, prefix: str, calls: int, landed: list[Landed]) -> None:
        """One chunk per call in turn; a chunk the broker does not take is sent again until it does."""
        for k, (c, payload) in enumerate(zip(self.chunks, self.payloads, strict=True)):
            for i in range(calls):
                meta = ChunkMeta(f"{prefix}-{i}", c.seq, c.start_ms, duration_ms=c.end_ms - c.start_ms,
                                 end_of_call=k == len(self.chunks) - 1)
                for _ in range(120):
                    try:
                        with ChunkPublisher(settings, create_topics=False, connect_timeout_s=5) as pub:
                            pub.publish(meta, payload)
                            (md,) = pub.wait(timeout=20)
                        landed.append(Landed(md.partition, md.offset, time.time()))
                        break
                    except Exception:
                        time.sleep(1)
                time.sleep(0.1)

    def dead_letters(self, settings: Settings) -> Counter[tuple[int, int]]:
        """How many dead letters name each source offset of the run's chunks topic."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(settings.dlq_topic, bootstrap_servers=settings.bootstrap_servers,
                                 group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=4000,
                                 enable_auto_commit=False, **kafka_python_kwargs(settings))
        seen: Counter[tuple[int, int]] = Counter()
        try:
            for record in consumer:
                parts = dict(record.headers or []).get(H_DLQ_SOURCE, b"").decode().rsplit("/", 2)
                if len(parts) == 3 and parts[0] == settings.chunks_topic:
                    seen[(int(parts[1]), int(parts[2]))] += 1
        finally:
            consumer.close()
        return seen

    def committed(self, settings: Settings) -> dict[int, int]:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **kafka_python_kwargs(settings))
        try:
            offsets = admin.list_group_offsets(settings.app_id).get(settings.app_id, {})
        finally:
            admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.chunks_topic}

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                procs.stop_process(proc, timeout=15)
        self.workers.clear()

    def restart_missing_services(self) -> None:
        for name, start in services(self.base).values():
            if not procs.running_pid(self.base.state_dir, name):
                start(self.services)

    # --- one run ---------------------------------------------------------------------------------
    def run(self, fault: str, seed: int, calls: int, pause_s: float = 8.0) -> dict[str, Any]:
        rng = random.Random(f"{fault}/{seed}")
        total = calls * len(self.chunks)
        settings, env = self.isolated(f"{seed}")
        ensure_topics(settings, timeout=30)
        prefix = f"f{uuid.uuid4().hex[:5]}"
        landed: list[Landed] = []
        injected_at, recovered, t0 = 0, time.time(), time.time()
        try:
            a = self.start_worker(settings, env, f"{settings.app_id}-a")
            for name in NAMES[1:self.group]:
                self.start_worker(settings, env, f"{settings.app_id}-{name}")
            time.sleep(3)  # all in the group
            publisher = threading.Thread(target=self.publish, args=(settings, prefix, calls, landed), daemon=True)
            t0 = time.time()
            publisher.start()
            at = rng.randint(0, total * 3 // 4)   # the point of progress: settled chunks before the fault
            while len(self.ledger(settings.chunks_topic)) < at and time.time() - t0 < 300:
                time.sleep(0.1)
            injected_at = len(self.ledger(settings.chunks_topic))
            recovered = self.inject(fault, settings, env, a, pause_s)
            publisher.join(timeout=900)
            stalled = self.drain(settings, landed, recovered)
            time.sleep(3)   # the workers' commits (every second)
            return self.judge(fault, seed, settings, prefix, landed, injected_at, recovered, stalled, t0)
        finally:
            self.stop_workers()
            self.restart_missing_services()

    def inject(self, fault: str, settings: Settings, env: dict[str, str], worker: subprocess.Popen[bytes],
               pause_s: float) -> float:
        """Inject the fault; returns when everything is back."""
        if fault == "none":
            return time.time()
        if fault == "rolling restart":
            # A deploy: each worker stopped as its supervisor stops it (SIGTERM, a clean leave) and
            # started again once it is gone, the next one after ROLLING_GAP_S.
            self.restarts = []
            for i, name in enumerate(NAMES[:self.group]):
                proc = self.workers[i]
                self.restarts.append(time.time())
                procs.stop_process(proc, timeout=30)
                self.start_worker(settings, env, f"{settings.app_id}-{name}2")
                time.sleep(ROLLING_GAP_S)
            return time.time()
        if fault == "worker SIGKILL":
            self.restarts = [time.time()]
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            time.sleep(pause_s)
            self.start_worker(settings, env, f"{settings.app_id}-c")
        elif fault == "worker SIGSTOP":
            os.killpg(worker.pid, signal.SIGSTOP)
            time.sleep(SIGSTOP_S)
            os.killpg(worker.pid, signal.SIGCONT)
        elif fault == "worker SIGKILL while waiting on Triton":
            log = settings.state_dir / "logs" / f"{settings.app_id}-a.log"
            mark = len(log.read_text(errors="replace"))
            _kill(self.base, triton.NAME)
            deadline = time.time() + 60
            while "transient fault" not in log.read_text(errors="replace")[mark:] and time.time() < deadline:
                time.sleep(0.2)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            time.sleep(pause_s)
            triton.start(self.services)
            self.start_worker(settings, env, f"{settings.app_id}-c")
        else:
            name, start = services(self.base)[fault]
            _kill(self.base, name)
            time.sleep(pause_s)
            start(self.services)
        return time.time()

    def drain(self, settings: Settings, landed: list[Landed], recovered: float) -> list[int]:
        """Wait until every landed offset has its row; returns the partitions still unsettled after the
        bound."""
        want = {(x.partition, x.offset) for x in landed}
        while time.time() - recovered < STALL_BOUND_S:
            if want <= set(self.ledger(settings.chunks_topic)):
                return []
            time.sleep(0.5)
        return sorted({p for p, o in want - set(self.ledger(settings.chunks_topic))})

    def judge(self, fault: str, seed: int, settings: Settings, prefix: str, landed: list[Landed], injected_at: int,
              recovered: float, stalled: list[int], t0: float) -> dict[str, Any]:
        led = self.ledger(settings.chunks_topic)
        dlq = self.dead_letters(settings)
        want = {(x.partition, x.offset) for x in landed}
        ends = [led[k] for k in want if k in led]
        done = {k for k in want if k in led and led[k].status == "done"}
        failed = {k for k in want if k in led and led[k].status == "failed"}
        last = {p: max(o for q, o in want if q == p) for p, _ in want}
        committed = self.committed(settings)
        rows = self.rows(prefix)
        if fault == "none" and self.reference is None:
            self.reference = rows
        ref = self.reference or {}
        off = {i: ({r[:4] for r in rows.get(i, [])} ^ {r[:4] for r in ref.get(i, [])}) for i in set(rows) | set(ref)}
        cells = sum(len(v) for v in off.values())
        if cells:
            diff = {i: sorted(v) for i, v in off.items() if v}
            self.log(f"  cells off the reference (call: cells in one run only): {diff}")
        labels = sum(a != b for i in ref for a, b in zip(sorted(rows.get(i, [])), sorted(ref[i]), strict=False))
        with self.engine.connect() as conn:
            overlaps = conn.execute(text("""
                SELECT count(*) FROM emotion_segments a JOIN emotion_segments b
                  ON a.call_id = b.call_id AND a.participant_id = b.participant_id AND a.model_version = b.model_version
                 AND a.start_ms < b.start_ms AND b.start_ms < a.end_ms
                WHERE a.call_id LIKE :p"""), {"p": f"{prefix}-%"}).scalar_one()
        settled_at = max((r.at for r in ends), default=recovered)
        stalls = {}
        if fault in ("rolling restart", "worker SIGKILL"):
            # Per stop: the longest time no chunk was settled, from the stop until 45 s after it or
            # the last chunk settled, whichever is first ("idle": the publisher had finished and nothing
            # was left to settle, so the stop stalled nothing that can be seen).
            # And the longest a partition waited: from the stop to the first settling of an offset that
            # was in the log, unsettled, when the worker stopped (its partition moved, or came back).
            times = sorted(r.at for r in ends)
            for i, t in enumerate(self.restarts):
                window = [t] + [x for x in times if t < x < t + 45]
                gaps = [b - a for a, b in zip(window, window[1:], strict=False)]
                stalls[f"stall after stop {i + 1} s"] = round(max(gaps), 1) if gaps else "idle"
                waiting: dict[int, float] = {}
                for x in landed:
                    row = led.get((x.partition, x.offset))
                    if row is not None and x.at < t < row.at:
                        waiting[x.partition] = min(waiting.get(x.partition, math.inf), row.at)
                stalls[f"partition wait after stop {i + 1} s"] = \
                    round(max(a - t for a in waiting.values()), 1) if waiting else "idle"
        return {
            "fault": fault, "seed": seed, "injected after": injected_at, "published": len(want),
            "done": len(done), "failed": len(failed), "dead letters": sum(dlq.values()),
            "lost": len(want - set(led)),
            "done and dead-lettered": sum(1 for k in done if dlq[k]),
            "failed without dead letter": sum(1 for k in failed if not dlq[k] or not led[k].sent),
            "dead letters sent twice": sum(1 for k in dlq if dlq[k] > 1),
            "commit short of end": sum(1 for p, o in last.items() if committed.get(p, -1) != o + 1),
            "cells off reference": cells, "labels off reference": labels, "rows overlapping": overlaps,
            "stalled partitions": len(stalled),
            "drain after recovery s": round(max(0.0, settled_at - recovered), 1),
            "total s": round(settled_at - t0, 1),
            "media left (objects / chunk files / Triton regions)": leftovers(settings, prefix),
            **stalls,
        }


def leftovers(settings: Settings, prefix: str, wait_s: float = 15.0) -> str:
    """Claim-check objects of the run's calls, chunk files in /dev/shm, Triton regions nobody maps,
    still there; the object count is given `wait_s` to reach zero (workers retry failed deletes)."""
    from pipeline.ingest.claimcheck import s3_client
    from pipeline.media.chunkfile import CHUNK_PREFIX
    from pipeline.media.holders import held

    client, deadline = s3_client(settings), time.time() + wait_s
    while True:
        listed = client.list_objects_v2(Bucket=settings.claim_check_bucket, Prefix=f"calls/{prefix}-")
        objects = len(listed.get("Contents", []))
        if objects == 0 or time.time() > deadline:
            break
        time.sleep(1)
    shm = Path("/dev/shm")
    chunk_files = len(list(shm.glob(f"{CHUNK_PREFIX}*")))
    regions = {str(p) for p in shm.glob(f"{triton.SHM_PREFIX}*")}
    return f"{objects} / {chunk_files} / {len(regions - held(regions))}"


def _kill(settings: Settings, name: str) -> None:
    pid = procs.running_pid(settings.state_dir, name)
    if not pid:
        raise RuntimeError(f"{name} is not a service of this stack (no pid under {settings.state_dir}): "
                           "the suite kills only what it can restart")
    if pid:
        os.kill(pid, signal.SIGKILL)  # the service only, as a crash would: its children are on their own
        deadline = time.time() + 10
        while procs.running_pid(settings.state_dir, name) and time.time() < deadline:
            time.sleep(0.1)


BROKEN = ("lost", "done and dead-lettered", "failed without dead letter", "commit short of end",
          "cells off reference", "rows overlapping", "stalled partitions")


def broken(row: Mapping[str, Any]) -> list[str]:
    """What a run's row says went wrong (empty: every promise held)."""
    return [k for k in BROKEN if row.get(k)]


def run_suite(suite: Suite, faults: list[str], seeds: int, calls: int) -> list[dict[str, Any]]:
    out = [suite.run("none", 0, calls)]
    suite.log(f"  {out[-1]}")
    for fault in faults:
        for seed in range(seeds):
            out.append(suite.run(fault, seed, calls))
            suite.log(f"  {out[-1]}")
    return out
