"""The per-message policy with fakes: every fault class reaches exactly one end, in bounded attempts."""

import asyncio

import pytest
from aiokafka.errors import (
    MessageSizeTooLargeError,  # what the worker's producer raises for a record the broker refuses
)

from pipeline.contract import ChunkMeta
from pipeline.errors import BadChunk, TransientFault
from pipeline.worker.handler import MessageHandler
from tests.unit.fakes import FakeDLQ, FakeProcessor, FakeWriter, delivery

GOOD = ChunkMeta("call-1", 0, 0, duration_ms=1000).headers()


def handler(processor=None, writer=None, dlq=None, **kw):
    kw.setdefault("retry_initial_s", 0.001)
    kw.setdefault("retry_max_s", 0.002)
    return MessageHandler(processor or FakeProcessor(), writer or FakeWriter(), dlq or FakeDLQ(), **kw)


def run(h, headers=GOOD, value=b"media", key=b"call-1", offset=7):
    return asyncio.run(h.handle(delivery("chunks", 0, offset, key, value, headers)))


def test_a_good_chunk_commits_rows_and_nothing_is_dead_lettered():
    w, d = FakeWriter(), FakeDLQ()
    assert run(handler(writer=w, dlq=d)) == "done"
    assert len(w.commits) == 1 and not d.sent and not w.failures


@pytest.mark.parametrize("reason", ["undecodable", "truncated", "claim_check_missing", "claim_check_rejected",
                                    "claim_check_refused", "inference_rejected", "db_rejected", "decode_timeout"])
def test_a_permanent_fault_is_dead_lettered_at_once_with_its_reason(reason):
    p, w, d = FakeProcessor([BadChunk(reason, "why")]), FakeWriter(), FakeDLQ()
    assert run(handler(p, w, d)) == "failed"
    assert p.calls == 1 and d.reasons() == [reason]
    assert w.failures[0][1]["error_reason"] == reason and w.failures[0][1]["status"] == "failed"


CLAIMED = ChunkMeta("call-1", 3, 0, duration_ms=1000, claim_check="s3://chunks/calls/call-1/000003.mkv").headers()


def test_a_copy_of_a_committed_chunk_whose_payload_was_consumed_is_done_not_dead_lettered():
    p, w, d = FakeProcessor([BadChunk("claim_check_missing", "404")]), FakeWriter(), FakeDLQ()
    w.committed[("call-1", "", 3)] = "chunks/0/2"
    assert run(handler(p, w, d), headers=CLAIMED, value=b"") == "done"
    assert not d.sent and not w.failures and not w.commits
    row = w.redeliveries[0]
    assert row["status"] == "done" and row["segments"] == 0 and "chunks/0/2" in row["note"]


def test_a_missing_payload_of_a_chunk_never_committed_is_dead_lettered():
    p, w, d = FakeProcessor([BadChunk("claim_check_missing", "404")]), FakeWriter(), FakeDLQ()
    w.committed[("call-1", "", 4)] = "chunks/0/2"          # another seq of the call does not count
    assert run(handler(p, w, d), headers=CLAIMED, value=b"") == "failed"
    assert d.reasons() == ["claim_check_missing"] and not w.redeliveries


def test_a_bad_header_is_dead_lettered_with_the_original_message():
    d, w = FakeDLQ(), FakeWriter()
    headers = [(k, b"99999999999999999999" if k == "start-ms" else v) for k, v in GOOD]
    assert run(handler(writer=w, dlq=d), headers=headers) == "failed"
    key, value, hs = d.sent[0]
    assert (key, value) == (b"call-1", b"media") and dict(hs)["start-ms"] == b"99999999999999999999"
    assert dict(hs)["dlq-source"] == b"chunks/0/7" and w.failures[0][0] is None   # no call row from bad headers
    assert w.failures[0][1]["call_id"] == "call-1"   # but its valid call-id: `dlq --call call-1` finds it


def test_a_dead_letter_names_its_call_only_when_the_call_id_is_valid_and_the_key_agrees():
    from pipeline.contract import call_id_of

    assert call_id_of(GOOD, b"call-1") == "call-1" and call_id_of(GOOD, None) == "call-1"
    assert call_id_of(GOOD, b"call-2") is None
    assert call_id_of([("call-id", b"no spaces allowed")], None) is None and call_id_of(None, None) is None


def test_an_offset_the_consumer_could_not_read_is_dead_lettered_and_never_processed():
    p, w, d = FakeProcessor(), FakeWriter(), FakeDLQ()
    h = handler(p, w, d)
    unreadable = delivery("chunks", 3, 50, None, None, (), unreadable="CorruptRecordException: Invalid CRC")
    outcome = asyncio.run(h.handle(unreadable))
    assert outcome == "failed" and p.calls == 0 and d.reasons() == ["unreadable_batch"]
    key, value, hs = d.sent[0]
    assert key is None and not value and dict(hs)["dlq-source"] == b"chunks/3/50"
    assert b"Invalid CRC" in dict(hs)["dlq-detail"]
    row = w.failures[0][1]
    assert row["error_reason"] == "unreadable_batch" and row["offset"] == 50 and "call_id" not in row
    # Read again after a seek back: its end stands, nothing is sent twice.
    again = asyncio.run(h.handle(unreadable))
    assert again == "failed" and len(d.sent) == 1


def test_a_bug_costs_one_chunk_not_the_worker():
    d = FakeDLQ()
    assert run(handler(FakeProcessor([ZeroDivisionError("oops")]), dlq=d)) == "failed"
    assert d.reasons() == ["processing_error"]


def test_a_transient_fault_is_retried_until_the_dependency_is_back():
    p = FakeProcessor([TransientFault("down", "triton")] * 3)
    w = FakeWriter()
    assert run(handler(p, w, max_attempts=10)) == "done"
    assert p.calls == 4 and len(w.commits) == 1


def test_a_message_that_keeps_failing_while_its_dependency_answers_is_exhausted():
    p = FakeProcessor([TransientFault("500 on this object", "object_store")] * 100)
    d = FakeDLQ()

    async def up() -> bool:
        return True

    assert run(handler(p, dlq=d, max_attempts=4, health={"object_store": up})) == "failed"
    assert p.calls == 4 and d.reasons() == ["retries_exhausted"]
    assert b"4 attempts" in dict(d.sent[0][2])["dlq-detail"]


def test_a_dependency_that_is_really_down_is_waited_for_not_blamed_on_the_message():
    p = FakeProcessor([TransientFault("refused", "postgres")] * 8)
    d, w = FakeDLQ(), FakeWriter()
    answers = iter([False] * 10)

    async def down() -> bool:
        return next(answers)

    assert run(handler(p, w, d, max_attempts=3, health={"postgres": down})) == "done"
    assert p.calls == 9 and not d.sent


def test_a_db_error_while_committing_rows_is_the_chunks_fault():
    w, d = FakeWriter(commit_errors=[BadChunk("db_rejected", "DataError: value out of range")]), FakeDLQ()
    assert run(handler(writer=w, dlq=d)) == "failed"
    assert d.reasons() == ["db_rejected"]


def test_the_dead_letter_topic_down_is_transient_and_nothing_is_lost():
    d = FakeDLQ(errors=[ConnectionError("broker gone")] * 3)
    w = FakeWriter()
    assert run(handler(FakeProcessor([BadChunk("undecodable")]), w, d, max_attempts=2)) == "failed"
    assert d.reasons() == ["undecodable"] and len(w.failures) == 1


def test_a_dead_letter_too_large_for_the_topic_still_arrives_as_a_reference():
    d = FakeDLQ(errors=[MessageSizeTooLargeError("too big")])
    assert run(handler(FakeProcessor([BadChunk("undecodable")]), dlq=d)) == "failed"
    key, value, hs = d.sent[0]
    assert value == b"" and dict(hs)["dlq-payload"].startswith(b"omitted") and dict(hs)["dlq-source"] == b"chunks/0/7"


def test_a_large_payload_is_parked_in_the_object_store_and_referenced():
    d, parked = FakeDLQ(), {}

    async def park(source: str, payload: bytes) -> str:
        parked[source] = payload
        return f"s3://callstream-chunks/dlq/{source.replace('/', '-')}.bin"

    h = handler(FakeProcessor([BadChunk("undecodable")]), dlq=d, park_payload=park, dlq_inline_limit=10)
    assert run(h, value=b"x" * 100) == "failed"
    assert parked == {"chunks/0/7": b"x" * 100}
    assert d.sent[0][1] == b"" and dict(d.sent[0][2])["dlq-payload"] == b"s3://callstream-chunks/dlq/chunks-0-7.bin"


def test_a_refused_ledger_row_is_recorded_without_the_header_fields():
    w = FakeWriter(failure_errors=[BadChunk("db_rejected", "too long")])
    assert run(handler(FakeProcessor([BadChunk("undecodable")]), w)) == "failed"
    assert len(w.failures) == 1 and "call_id" not in w.failures[0][1]


def test_cancellation_leaves_the_message_unsettled_for_the_next_owner():
    w, d = FakeWriter(), FakeDLQ()

    class Slow(FakeProcessor):
        async def process(self, meta, value):
            await asyncio.sleep(10)

    async def go():
        task = asyncio.create_task(handler(Slow(), w, d).handle(delivery("chunks", 0, 1, b"call-1", b"v", GOOD)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert not w.commits and not w.failures and not d.sent


def test_metrics_count_every_end_reason_and_retry():
    from pipeline.worker.metrics import Metrics

    m = Metrics()
    p = FakeProcessor([TransientFault("triton down", "triton"), BadChunk("undecodable", "x")])
    h = handler(p, metrics=m)
    published = ChunkMeta("call-1", 1, 1000, duration_ms=1000, published_at_ms=1).headers()
    assert [run(h), run(h, offset=10), run(h, headers=published, offset=11),
            run(h, headers=[("seq", b"1")], offset=9)] == \
        ["failed", "done", "done", "failed"]   # the first retries once (triton), then is undecodable

    def value(name, **labels):
        return m.registry.get_sample_value(name, labels) or 0.0

    assert value("callstream_chunks_total", outcome="done", reason="") == 2
    assert value("callstream_chunks_total", outcome="failed", reason="undecodable") == 1
    assert value("callstream_chunks_total", outcome="failed", reason="missing_header") == 1
    assert value("callstream_dlq_published_total", reason="undecodable") == 1
    assert value("callstream_retries_total", dependency="triton") == 1
    assert value("callstream_segments_written_total") == 2
    assert value("callstream_stage_seconds_count", stage="db") == 2
    assert value("callstream_publish_to_commit_seconds_count") == 1     # only the chunk that says when
    assert asyncio.run(h.handle(delivery("chunks", 0, 8, b"call-1", b"media", GOOD, timestamp=1.0))) == "done"
    assert value("callstream_publish_to_commit_seconds_count") == 2     # or whose record has a timestamp
    assert value("callstream_chunks_in_flight") == 0


def test_kafka_errors_are_told_apart_by_the_clients_types():
    import aiokafka.errors as a
    import kafka.errors as k

    from pipeline.worker.dead_letter import permanent_kafka_error as _permanent_kafka_error

    for never in (a.MessageSizeTooLargeError(), a.RecordTooLargeError(), k.MessageSizeTooLargeError(),
                  k.InvalidRecordError()):
        assert _permanent_kafka_error(never), never
    for transient in (a.KafkaTimeoutError(), a.NotLeaderForPartitionError(), k.KafkaTimeoutError(),
                      ConnectionError("refused")):
        assert not _permanent_kafka_error(transient), transient
    class Lookalike(Exception):   # a name and attributes are not a Kafka error
        retriable, errno = False, 10
    assert not _permanent_kafka_error(Lookalike())
