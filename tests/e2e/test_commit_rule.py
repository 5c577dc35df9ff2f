"""The commit rule and graceful stop, on the real stack.

A slow chunk and a fast later chunk share a partition; the worker is killed with SIGKILL once the fast
one has committed (and Faust has had time to commit offsets). The slow one must still be processed,
in full, by the next worker. And SIGTERM in the middle of a long chunk stops a worker within 10 s."""

import os
import signal
import time

import pytest

from callstream_lab.bench.runner import triton_counts
from callstream_lab.synth import generate_call
from pipeline.contract import ChunkMeta
from pipeline.ingest.producer import ChunkPublisher
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from tests.e2e.helpers import query, wait_chunks
from tests.stack import wait_for

pytestmark = pytest.mark.stack

LONG_S = 90


@pytest.fixture(scope="module")
def long_and_short(tmp_path_factory):
    d = tmp_path_factory.mktemp("commit")
    ff = ffmpeg_exe()
    long = generate_call(ff, d / "long.mp4", seconds=LONG_S, width=320, height=180)
    short = cut(ff, generate_call(ff, d / "short.mp4", seconds=2.4), 5.0)[0].path.read_bytes()
    return long.read_bytes(), short


def _publish(settings, call, long, short):
    with ChunkPublisher(settings) as pub:
        pub.publish(ChunkMeta(call, 0, 0, layout="dual"), long)
        pub.publish(ChunkMeta(call, 1, LONG_S * 1000, layout="dual", end_of_call=True), short)
        pub.wait()


def triton_requests(settings) -> float:
    """Requests the emotion model has executed so far (Triton's own metrics)."""
    return triton_counts(settings).get("emotion", (0.0, 0.0))[0]


def _done(settings, call):
    return {r[0] for r in query(settings, "SELECT seq FROM chunks WHERE call_id=:c AND status='done'", c=call)}


def test_sigkill_after_a_later_chunk_commits_loses_nothing(stack, long_and_short):
    env, settings = stack.isolated("commit")
    env["CALLSTREAM_SAMPLE_FPS"] = "6"       # make the long chunk take a while
    env["CALLSTREAM_WORKER_CONCURRENCY"] = "2"
    worker = stack.start_worker(env, "commit-1")
    _publish(settings, "e2e-commit", *long_and_short)
    deadline = time.time() + 180
    while 1 not in _done(settings, "e2e-commit"):
        assert time.time() < deadline and worker.poll() is None, stack.worker_log("commit-1")
        time.sleep(0.2)
    time.sleep(2.5)                          # Faust commits acknowledged offsets every second
    assert 0 not in _done(settings, "e2e-commit"), "the long chunk finished too soon to test the rule"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    again = stack.start_worker(env, "commit-2")
    try:
        wait_chunks(settings, "e2e-commit", 2, timeout=300)
        n = query(settings, "SELECT count(*) FROM emotion_segments WHERE call_id='e2e-commit' AND start_ms < :e",
                  e=LONG_S * 1000)[0][0]
        assert n == LONG_S                   # the customer's track (agents are not analysed by default)
        assert query(settings, "SELECT status FROM call_summary WHERE call_id='e2e-commit'")[0][0] == "complete"
    finally:
        stack.stop_worker(again)


def test_sigterm_mid_chunk_stops_within_ten_seconds_and_the_chunk_is_redone(stack, long_and_short):
    env, settings = stack.isolated("stop")
    env["CALLSTREAM_SAMPLE_FPS"] = "6"
    worker = stack.start_worker(env, "stop-1")
    log = settings.state_dir / "logs" / "worker-stop-1.log"
    deadline = time.time() + 120
    while "worker ready" not in log.read_text(errors="replace"):
        assert time.time() < deadline and worker.poll() is None, stack.worker_log("stop-1")
        time.sleep(0.2)
    before = triton_requests(stack.settings)
    _publish(settings, "e2e-stop", *long_and_short)
    # The long chunk is being analysed: its first inference requests have been made.
    wait_for(lambda: triton_requests(stack.settings) > before, 60, "the long chunk under way")
    assert 0 not in _done(settings, "e2e-stop")
    t0 = time.time()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    stopped = time.time() - t0
    assert stopped < 10, f"took {stopped:.1f}s to stop"
    again = stack.start_worker(env, "stop-2")
    try:
        wait_chunks(settings, "e2e-stop", 2, timeout=300)
        n = query(settings, "SELECT count(*) FROM emotion_segments WHERE call_id='e2e-stop'")[0][0]
        assert n == LONG_S + 3
    finally:
        stack.stop_worker(again)
