"""A call's chunks on any partitions: the timeline does not depend on where a producer's partitioner put
them. One call is published the way the README asks (every chunk on one partition, in order); the
same media as a second call is spread over all partitions in reverse order, so two workers process
its chunks at once and out of order, with cells straddling chunk edges merged from two workers'
pieces. Both calls must end with the same rows, complete, and each must fire its alert once."""

import uuid

import pytest

from callstream_lab.synth import speech_wav
from pipeline.contract import ChunkMeta
from pipeline.ingest.producer import ChunkPublisher
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from tests.e2e.helpers import query, wait_chunks

pytestmark = pytest.mark.stack

PARTITIONS = 4
RULES = """
[[rule]]
name = "customer-shouting"
arousal_above = 0.7
for_seconds = 4
"""
COLUMNS = ("participant_id, start_ms, end_ms, label, round(confidence::numeric, 4), round(arousal::numeric, 4), "
           "media, face_found, speech_found")


def test_a_call_spread_over_partitions_and_workers_gets_the_rows_of_a_call_on_one(stack, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    env, settings = stack.isolated("spread")
    env.update(CALLSTREAM_PARTITIONS=str(PARTITIONS), CALLSTREAM_ALERT_RULES=str(rules))
    settings = type(settings).from_env(env)
    # 2.5-s chunks on a 1-s grid: every other chunk edge cuts a cell in two.
    chunks = cut(ffmpeg_exe(), speech_wav(tmp_path / "call.wav", 8, 12), 2.5)
    assert len(chunks) >= 7
    run = uuid.uuid4().hex[:6]
    one, spread = f"one-{run}", f"spread-{run}"

    def meta(call: str, c) -> ChunkMeta:
        return ChunkMeta(call, c.seq, c.start_ms, duration_ms=c.end_ms - c.start_ms,
                         end_of_call=c.seq == len(chunks) - 1, participant_id="caller-1", role="customer",
                         media="audio")

    workers = [stack.start_worker(env, f"spread-{i}") for i in range(2)]
    try:
        with ChunkPublisher(settings) as pub:
            for c in chunks:
                m = meta(one, c)
                pub.publish_raw(c.path.read_bytes(), one.encode(), m.headers(), partition=0)
            for c in reversed(chunks):
                m = meta(spread, c)
                pub.publish_raw(c.path.read_bytes(), spread.encode(), m.headers(), partition=c.seq % PARTITIONS)
            landed = pub.wait()
        assert {x.partition for x in landed[len(chunks):]} == set(range(PARTITIONS))
        wait_chunks(settings, one, len(chunks))
        wait_chunks(settings, spread, len(chunks))
        workers_seen = query(settings, "SELECT count(DISTINCT worker) FROM chunks WHERE call_id = :c", c=spread)[0][0]
        assert workers_seen == 2, "both workers must have processed pieces of the spread call"

        def rows(call: str) -> list:
            return [tuple(r) for r in query(settings, f"SELECT {COLUMNS} FROM emotion_timeline WHERE call_id = :c "
                                                      "ORDER BY participant_id, start_ms", c=call)]
        assert rows(spread) == rows(one) and len(rows(one)) >= 20
        for call in (one, spread):
            assert query(settings, "SELECT status FROM call_summary WHERE call_id = :c", c=call)[0][0] == "complete"
            assert query(settings, "SELECT count(*) FROM alerts WHERE call_id = :c", c=call)[0][0] == 1
        for w in workers:
            assert w.poll() is None
    finally:
        for w in workers:
            stack.stop_worker(w)
