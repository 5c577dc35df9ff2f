"""A worker that is paused (SIGSTOP, a long GC, a VM pause) in the middle of a chunk for longer than its
group session loses its partitions to another worker. When it wakes up it must write nothing for the
work it lost: no `failed` ledger row, no dead letter, no call turned `complete_with_failures`."""

import os
import signal
import time
from pathlib import Path

import pytest

from pipeline.ingest.producer import ChunkPublisher, publish_recording
from pipeline.ingest.topics import read_from_start
from tests.e2e.helpers import query, wait_chunks
from tests.stack import wait_for

pytestmark = pytest.mark.stack

PAUSE_S = 35.0   # longer than the session (6 s) and than the 30-s header budget a wall clock would spend


def _decoding(pid: int) -> bool:
    """Whether the worker has an ffmpeg child running: it is in the middle of a chunk."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if int(rest[1]) == pid and "ffmpeg" in comm:
            return True
    return False


def test_a_worker_paused_mid_chunk_writes_nothing_after_losing_its_partitions(stack, media):
    env, settings = stack.isolated("fence")
    a = stack.start_worker(env, "fence-a")
    b = stack.start_worker(env, "fence-b")
    calls = [f"e2e-fence-{i}" for i in range(8)]
    stopped = False
    try:
        with ChunkPublisher(settings) as pub:
            publish_recording(settings, media["call10"], "e2e-fence-warm", publisher=pub)
        wait_for(lambda: query(settings, "SELECT count(DISTINCT worker) FROM chunks WHERE topic=:t",
                               t=settings.chunks_topic)[0][0] == 2 or
                 query(settings, "SELECT count(*) FROM chunks WHERE call_id='e2e-fence-warm'")[0][0] == 2,
                 180, "the workers ready")
        with ChunkPublisher(settings) as pub:
            for call in calls:
                publish_recording(settings, media["call20"], call, publisher=pub)
        # Stop worker a the moment it is decoding a chunk.
        wait_for(lambda: _decoding(a.pid), 120, "worker a decoding a chunk", interval=0.01)
        os.kill(a.pid, signal.SIGSTOP)
        stopped = True
        paused_at = time.monotonic()
        # Worker b takes a's partitions and finishes every call meanwhile.
        for call in calls:
            wait_chunks(settings, call, 4, timeout=240)
        time.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
        resumed_at = query(settings, "SELECT clock_timestamp()")[0][0]
        os.kill(a.pid, signal.SIGCONT)
        stopped = False
        # a wakes up, is fenced, rejoins the group; give it time to do whatever it would do.
        wait_for(lambda: any(w in stack.worker_log("fence-a") for w in ("revoked", "paused for", "stopped for")),
                 60, "worker a noticing it lost its work", log=lambda: stack.worker_log("fence-a"))
        time.sleep(10)
        failed = query(settings, "SELECT call_id, seq, error_reason, error_detail, worker FROM chunks "
                                 "WHERE call_id LIKE 'e2e-fence-%' AND status <> 'done'")
        assert failed == [], stack.worker_log("fence-a")
        assert not read_from_start(settings, settings.dlq_topic, expect=1, timeout=5)
        states = query(settings, "SELECT call_id, status FROM call_summary WHERE call_id LIKE 'e2e-fence-%'")
        assert states and all(s == "complete" for _, s in states), states
        late = query(settings, "SELECT call_id, seq, status FROM chunks WHERE worker LIKE :w AND processed_at > :t "
                               "AND call_id LIKE 'e2e-fence-%'", w=f"%:{a.pid}", t=resumed_at)
        assert late == [], "the paused worker wrote ledger rows for work it had lost"
        dup = query(settings, "SELECT call_id, participant_id, start_ms, count(*) FROM emotion_segments "
                              "WHERE call_id LIKE 'e2e-fence-%' GROUP BY 1, 2, 3 HAVING count(*) > 1")
        assert dup == []
        assert a.poll() is None and b.poll() is None, stack.worker_log("fence-a")
    finally:
        if stopped:
            os.kill(a.pid, signal.SIGCONT)
        stack.stop_worker(a)
        stack.stop_worker(b)
