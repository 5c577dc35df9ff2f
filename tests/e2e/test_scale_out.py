"""Two workers in one consumer group split the partitions; a worker leaving mid-run loses nothing."""

import pytest

from pipeline.ingest.producer import ChunkPublisher, publish_recording
from tests.e2e.helpers import query, wait_chunks
from tests.stack import wait_for

pytestmark = pytest.mark.stack


def test_two_workers_split_six_calls_without_loss_or_duplicates(stack, media):
    env, settings = stack.isolated("scale")
    a = stack.start_worker(env, "scale-a")
    b = stack.start_worker(env, "scale-b")
    calls = [f"e2e-scale-{i}" for i in range(6)]
    try:
        with ChunkPublisher(settings) as pub:
            for call in calls[:3]:
                publish_recording(settings, media["call10"], call, publisher=pub)
        wait_for(lambda: query(settings, "SELECT count(DISTINCT worker) FROM chunks WHERE topic=:t",
                               t=settings.chunks_topic)[0][0] == 2, 180, "both workers taking chunks")
        # One worker leaves; the group rebalances and the other takes over its partitions.
        stack.stop_worker(b)
        with ChunkPublisher(settings) as pub:
            for call in calls[3:]:
                publish_recording(settings, media["call10"], call, publisher=pub)
        for call in calls:
            wait_chunks(settings, call, 2, timeout=240)
        rows = query(settings, "SELECT call_id, track, start_ms, count(*) FROM emotion_segments "
                               "WHERE call_id LIKE 'e2e-scale-%' GROUP BY 1, 2, 3")
        # The customer only: agents are not analysed by default.
        assert len(rows) == 6 * 10 and all(r[3] == 1 for r in rows)
        done = query(settings, "SELECT count(DISTINCT (call_id, seq)) FROM chunks WHERE call_id LIKE 'e2e-scale-%' "
                               "AND status='done'")[0][0]
        assert done == 12
        assert a.poll() is None, stack.worker_log("scale-a")
    finally:
        stack.stop_worker(a)
