"""Chunks as recorder teams publish them with librdkafka (confluent-kafka): each compression codec,
idempotent, and transactional with an abort. Every compressed chunk and the plain canary behind it get
rows; an aborted chunk never does where the broker marks aborted transactions (the embedded tansu does
not: a read_committed consumer gets aborted records from it)."""

import asyncio
import uuid

import pytest

from pipeline.contract import ChunkMeta
from pipeline.ingest.topics import ensure_topics
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from tests.e2e.helpers import query, wait_chunks

pytestmark = pytest.mark.stack

CODECS = ("gzip", "snappy", "lz4", "zstd")


def _produce(producer, topic, call_id, payload, partition=0):
    meta = ChunkMeta(call_id, 0, 0, duration_ms=5000, end_of_call=True)
    producer.produce(topic, key=call_id.encode(), value=payload, headers=meta.headers(), partition=partition)


def _common(settings):
    return {"bootstrap.servers": settings.bootstrap_servers, "acks": "all", "enable.idempotence": True,
            "message.max.bytes": 4_000_000}


def _transactions(settings, topic, payloads):
    """(call id, commit?) in order, each in a transaction of its own, all on partition 0."""
    from confluent_kafka import Producer

    t = Producer({**_common(settings), "transactional.id": f"recorder-{uuid.uuid4().hex[:6]}"})
    t.init_transactions(30)
    for call_id, commit, payload in payloads:
        t.begin_transaction()
        _produce(t, topic, call_id, payload)
        t.flush(30)
        if commit:
            t.commit_transaction(30)
        else:
            t.abort_transaction(30)


def broker_filters_aborted_records(stack) -> bool:
    from aiokafka import AIOKafkaConsumer

    _, settings = stack.isolated("probe-txn")
    topic = settings.chunks_topic
    ensure_topics(settings)
    _transactions(settings, topic, [("aborted", False, b"a"), ("committed", True, b"c")])

    async def read() -> list[bytes]:
        c = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest",
                             isolation_level="read_committed", group_id=None)
        await c.start()
        try:
            got = await c.getmany(timeout_ms=5000)
            return [m.value for ms in got.values() for m in ms]
        finally:
            await c.stop()
    return asyncio.run(read()) == [b"c"]


@pytest.fixture(scope="module")
def payload(media):
    return cut(ffmpeg_exe(), media["call10"], 5.0)[0].path.read_bytes()


def test_every_codec_from_librdkafka_gets_rows_and_so_does_the_canary_behind_it(any_stack, payload):
    stack = any_stack
    from confluent_kafka import Producer

    env, settings = stack.isolated("codecs")
    ensure_topics(settings)
    run = uuid.uuid4().hex[:4]   # both brokers' runs share one database
    for codec in CODECS:   # one compressed batch, then a plain canary behind it on the same partition
        p = Producer({**_common(settings), "compression.type": codec})
        _produce(p, settings.chunks_topic, f"e2e-codec-{run}-{codec}", payload)
        assert p.flush(30) == 0
        p = Producer(_common(settings))
        _produce(p, settings.chunks_topic, f"e2e-canary-{run}-{codec}", payload)
        assert p.flush(30) == 0
    worker = stack.start_worker(env, "codecs")
    try:
        for codec in CODECS:
            wait_chunks(settings, f"e2e-codec-{run}-{codec}", 1, timeout=120)
            wait_chunks(settings, f"e2e-canary-{run}-{codec}", 1, timeout=60)
        assert query(settings, "SELECT count(*) FROM chunks WHERE topic = :t AND status <> 'done'",
                     t=settings.chunks_topic)[0][0] == 0
        assert worker.poll() is None, stack.worker_log("codecs")
    finally:
        stack.stop_worker(worker)


def test_an_aborted_transactional_chunk_is_never_analysed(any_stack, payload):
    stack = any_stack
    env, settings = stack.isolated("txn")
    if not broker_filters_aborted_records(stack):
        pytest.skip("this broker hands aborted transactional records to read_committed consumers (tansu does)")
    ensure_topics(settings)
    run = uuid.uuid4().hex[:4]
    _transactions(settings, settings.chunks_topic, [(f"e2e-txn-{run}-aborted", False, payload),
                                                    (f"e2e-txn-{run}-committed", True, payload)])
    worker = stack.start_worker(env, "txn")
    try:
        wait_chunks(settings, f"e2e-txn-{run}-committed", 1, timeout=120)
        # Same partition, later offset: the aborted chunk was passed, never analysed.
        assert query(settings, "SELECT count(*) FROM chunks WHERE call_id = :c", c=f"e2e-txn-{run}-aborted")[0][0] == 0
    finally:
        stack.stop_worker(worker)
