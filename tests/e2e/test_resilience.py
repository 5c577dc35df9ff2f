"""Faults of the world, not of the chunk: nothing is dead-lettered, nothing is lost, nothing doubles."""

import pytest

from callstream_lab.stack import broker, triton
from pipeline.contract import ChunkMeta
from pipeline.ingest.producer import ChunkPublisher
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from tests.e2e.helpers import query, segments, wait_chunks
from tests.stack import read_topic, wait_for

pytestmark = pytest.mark.stack


def _publish(settings, media, call_id):
    with ChunkPublisher(settings) as pub:
        for c in cut(ffmpeg_exe(), media["call10"], 5.0):
            pub.publish(ChunkMeta(call_id, c.seq, c.start_ms, duration_ms=c.end_ms - c.start_ms,
                                  end_of_call=c.seq == 1), c.path.read_bytes())


def test_triton_outage_is_retried_and_holds_the_offset(stack, media):
    env, settings = stack.isolated("outage")
    worker = stack.start_worker(env, "outage")
    try:
        _publish(settings, media, "e2e-warm")
        wait_chunks(settings, "e2e-warm", 2)
        triton.stop(stack.settings)
        _publish(settings, media, "e2e-outage")
        # The worker has the chunks and keeps retrying: several attempts, nothing settled meanwhile.
        wait_for(lambda: stack.worker_log("outage").count("transient fault") >= 3, 60, "retries")
        assert query(settings, "SELECT count(*) FROM chunks WHERE call_id='e2e-outage'")[0][0] == 0
        triton.start(stack.settings)   # returns once the server says it is ready
        ready_at = query(settings, "SELECT clock_timestamp()")[0][0]
        wait_chunks(settings, "e2e-outage", 2, timeout=180)
        # The waiting chunks probe Triton: the first commits within ~2 s of readiness, not after the
        # backoff (up to 16-30 s) they were sleeping when it came back.
        first = query(settings, "SELECT min(processed_at) FROM chunks WHERE call_id='e2e-outage'")[0][0]
        assert (first - ready_at).total_seconds() < 3.0, (first - ready_at, stack.worker_log("outage"))
        assert len(segments(settings, "e2e-outage")) == 10
        assert query(settings, "SELECT count(*) FROM chunks WHERE call_id='e2e-outage' AND status='failed'")[0][0] == 0
        assert worker.poll() is None, stack.worker_log("outage")
    finally:
        if not triton.procs.running_pid(stack.settings.state_dir, triton.NAME):
            triton.start(stack.settings)
        stack.stop_worker(worker)


def test_broker_restart_keeps_every_message(stack, media):
    """tansu keeps its log in S3 (SeaweedFS on disk), so a restart loses nothing."""
    env, settings = stack.isolated("restart")
    _publish(settings, media, "e2e-restart")
    before = read_topic(settings, settings.chunks_topic, expect=2)
    broker.stop(stack.settings)
    broker.start(stack.settings)
    after = read_topic(settings, settings.chunks_topic, expect=2)
    assert sorted((m.partition, m.offset, m.value) for m in after) == \
        sorted((m.partition, m.offset, m.value) for m in before)
    assert len(after) == 2
    # And a worker started after the restart processes them.
    worker = stack.start_worker(env, "restart")
    try:
        wait_chunks(settings, "e2e-restart", 2)
    finally:
        stack.stop_worker(worker)
