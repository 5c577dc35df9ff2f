"""Create the chunks, dead-letter and alerts topics with the configured partition count (idempotent)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import AuthorizationError, KafkaError, SaslAuthenticationFailedError, TopicAlreadyExistsError

from pipeline.ingest.security import aiokafka_kwargs, kafka_python_kwargs, require_credentials
from pipeline.settings import Settings

log = logging.getLogger("callstream.topics")


def bootstrap_within(client: type, seconds: float) -> dict[str, int]:
    """kafka-python 3 waits `bootstrap_timeout_ms` (30 s) for a broker before it gives up; a command a
    user typed should say so in seconds. Older clients have no such option (and fail faster)."""
    return {"bootstrap_timeout_ms": int(seconds * 1000)} if "bootstrap_timeout_ms" in getattr(
        client, "DEFAULT_CONFIG", {}) else {}


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the topics that do not exist yet. A principal that may not create topics (least privilege:
    a recorder, a worker) leaves that to the operator who made them; wrong credentials fail at once,
    they are not a broker that is still starting."""
    require_credentials(settings)
    deadline = time.time() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="callstream-admin",
                                     **bootstrap_within(KafkaAdminClient, max(1.0, deadline - time.time())),
                                     **kafka_python_kwargs(settings))
            break
        except (SaslAuthenticationFailedError, AuthorizationError):
            raise
        except KafkaError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())   # the topics this principal may describe
        wanted = [NewTopic(settings.chunks_topic, settings.partitions, 1),
                  NewTopic(settings.dlq_topic, max(1, settings.partitions // 4), 1),
                  NewTopic(settings.alerts_topic, max(1, settings.partitions // 4), 1)]
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
            except AuthorizationError:
                # Not ours to create (or even to see): the broker says so again, in one line, if this
                # client then needs the topic and may not use it.
                log.debug("not allowed to create %s; the operator creates it", topic.name)
    finally:
        admin.close()


def read_from_start(settings: Settings, topic: str, expect: int | None = None, timeout: float = 30.0,
                    idle_s: float = 3.0) -> list[Any]:
    """Every record of `topic` from its beginning, without a consumer group (manual assignment):
    up to the end offsets seen at the start, or, with `expect`, until that many have arrived (records
    still being published). Stops after `timeout`, or `idle_s` without a record while catching up."""
    async def run() -> list[Any]:
        async with _assigned(settings, topic, fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=32 * 1024 * 1024) as (consumer, parts):
            if not parts:
                return []
            await consumer.seek_to_beginning()
            ends = await consumer.end_offsets(parts)

            async def more() -> bool:
                if expect is not None:
                    return len(got) < expect
                return any([await consumer.position(tp) < ends[tp] for tp in parts])

            got: list[Any] = []
            deadline, last = time.monotonic() + timeout, time.monotonic()
            while time.monotonic() < deadline and await more():
                if expect is None and time.monotonic() - last > idle_s:
                    break  # behind the end offsets but nothing arrives: records were deleted
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(msgs)
                    last = time.monotonic()
            return got

    return asyncio.run(run())


def tail(settings: Settings, topic: str, on_value: Any, from_start: bool = False, limit: int | None = None) -> None:
    """Follow `topic` (every partition, no consumer group) and call on_value(value) per record, until
    interrupted or `limit` records."""
    async def run() -> None:
        async with _assigned(settings, topic) as (consumer, parts):
            if not parts:
                raise RuntimeError(f"topic {topic} does not exist (start a worker, or run `callstream up`)")
            await (consumer.seek_to_beginning() if from_start else consumer.seek_to_end())
            seen = 0
            while limit is None or seen < limit:
                batches = (await consumer.getmany(timeout_ms=500)).values()
                seen = deliver([m.value for msgs in batches for m in msgs], on_value, seen, limit)

    asyncio.run(run())


def deliver(values: list[Any], on_value: Any, seen: int, limit: int | None) -> int:
    """Hand values on until `limit` in all: one fetch may bring more records than are still wanted."""
    for value in values:
        if limit is not None and seen >= limit:
            break
        on_value(value)
        seen += 1
    return seen


@asynccontextmanager
async def _assigned(settings: Settings, topic: str, **options: Any) -> AsyncIterator[tuple[Any, list[Any]]]:
    """A consumer without a group, assigned every partition of `topic` (none when it does not exist)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None, **options, **aiokafka_kwargs(settings))
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()   # a consumer that could not start is closed too (no "unclosed" warning)
        raise
    try:
        # The consumer's cached metadata holds only the topics it was asked about: Apache Kafka answers a
        # bootstrap request with none (tansu with all), so ask the cluster for this topic's partitions.
        cluster = await consumer._client.fetch_all_metadata()
        parts = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or [])]
        if parts:
            consumer.assign(parts)
        yield consumer, parts
    finally:
        await consumer.stop()
