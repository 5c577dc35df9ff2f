"""How far the consumer group is behind, and how deep a topic is: read from the broker's own offsets
(the group's committed offsets and each partition's end), so `callstream status` needs no worker."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorError

from pipeline.ingest.security import kafka_python_kwargs
from pipeline.ingest.topics import bootstrap_within
from pipeline.settings import Settings

CONNECT_TIMEOUT_S = 5.0   # `status` says a broker is down in seconds


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None   # the group's next offset to process; None = never committed
    end: int                # the partition's end offset (high watermark)
    start: int              # its earliest retained offset

    @property
    def trusted(self) -> bool:
        """A committed offset past the partition's end cannot be: the broker's end offset is behind
        (an embedded broker that reports it late, a partition recreated under the group). The lag is
        then unknown, not zero."""
        return self.committed is None or self.committed <= self.end

    @property
    def lag(self) -> int | None:
        if not self.trusted:
            return None
        return max(0, self.end - (self.committed if self.committed is not None else self.start))


def _consumer(settings: Settings) -> KafkaConsumer:
    # Fetches only read the high watermark: one record batch at most (a broker returns one even above
    # these limits), not the chunks' media.
    return KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, client_id="callstream-status",
                         enable_auto_commit=False, fetch_max_bytes=1, max_partition_fetch_bytes=1,
                         **bootstrap_within(KafkaConsumer, CONNECT_TIMEOUT_S), **kafka_python_kwargs(settings))


def _admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="callstream-status",
                            **bootstrap_within(KafkaAdminClient, CONNECT_TIMEOUT_S), **kafka_python_kwargs(settings))


def end_offsets(consumer: KafkaConsumer, tps: list[TopicPartition], starts: dict[TopicPartition, int],
                wait_s: float = 3.0) -> dict[TopicPartition, int]:
    """Each partition's end: the larger of what ListOffsets says and the high watermark a fetch reports.

    The embedded broker (tansu) answers ListOffsets(latest) with 1 for any non-empty partition, while
    its fetch responses carry the true high watermark (13 records: ListOffsets 1, fetch 13). So one
    small fetch per partition, from its last known record, reads the watermark; a broker whose
    ListOffsets is right gives the same figure both ways."""
    listed = consumer.end_offsets(tps)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, max(starts[tp], listed[tp] - 1))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
        consumer.poll(timeout_ms=200, max_records=1)
    return {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in tps}


COORDINATOR_WAIT_S = 10.0


def _group_offsets(admin: KafkaAdminClient, group: str) -> dict:
    """The group's committed offsets. A broker that has never had a consumer group answers "coordinator
    not available" until it has created its offsets topic (Apache Kafka does so on this first request):
    ask again for a few seconds."""
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    while True:
        try:
            return dict(admin.list_group_offsets(group).get(group, {}))
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def group_lag(settings: Settings, topic: str | None = None, group: str | None = None) -> list[PartitionLag]:
    topic, group = topic or settings.chunks_topic, group or settings.app_id
    admin = _admin(settings)
    consumer = _consumer(settings)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        starts = consumer.beginning_offsets(tps)
        ends = end_offsets(consumer, tps, starts)
        committed = {tp.partition: om.offset for tp, om in _group_offsets(admin, group).items()
                     if tp.topic == topic and om.offset >= 0}
        return [PartitionLag(p, committed.get(p), ends[TopicPartition(topic, p)], starts[TopicPartition(topic, p)])
                for p in parts]
    finally:
        consumer.close()
        admin.close()


def topic_depth(settings: Settings, topic: str) -> int:
    """Records a topic holds now (end minus earliest offset, summed over partitions)."""
    consumer = _consumer(settings)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not tps:
            return 0
        starts = consumer.beginning_offsets(tps)
        ends = end_offsets(consumer, tps, starts)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        consumer.close()


@dataclass(frozen=True)
class Member:
    """One consumer of the group, as the group's coordinator describes it."""
    client_id: str
    host: str
    partitions: tuple[int, ...]   # of the chunks topic


def _assigned(assignment: object, topic: str) -> list[int]:
    """The chunks topic's partitions in a member's assignment, however the client library decoded it
    (a dict of assigned_partitions, an object with partitions(), raw bytes it could not decode)."""
    if isinstance(assignment, dict):
        entries = assignment.get("assigned_partitions") or assignment.get("assignment") or []
        out: list[int] = []
        for e in entries:
            t, ps = (e.get("topic"), e.get("partitions")) if isinstance(e, dict) else (e[0], e[1])
            if t == topic:
                out += [int(p) for p in ps or []]
        return out
    partitions = getattr(assignment, "partitions", None)
    if callable(partitions):
        return [tp.partition for tp in partitions() if tp.topic == topic]
    return []


def group_members(settings: Settings, topic: str | None = None,
                  group: str | None = None) -> list[Member] | str:
    """Who is in the consumer group and which partitions each holds; or why the broker does not say (its
    answer to DescribeGroups is not one the client decodes)."""
    topic, group = topic or settings.chunks_topic, group or settings.app_id
    admin = _admin(settings)
    try:
        info = admin.describe_groups([group]).get(group) or {}
    except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
        return []   # no consumer has joined the group yet: the broker has no coordinator for it
    except Exception as exc:   # a partial Kafka API (tansu's answer does not decode): the lag above stands
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        admin.close()
    if info.get("error"):
        return str(info["error"])[:200]
    members = [Member(str(m.get("client_id") or ""), str(m.get("client_host") or "").lstrip("/"),
                      tuple(sorted(_assigned(m.get("member_assignment"), topic)))) for m in info.get("members") or []]
    return sorted(members, key=lambda m: (m.partitions[:1], m.client_id))


def spans(numbers: tuple[int, ...]) -> str:
    """0, 1, 2, 5, 7, 8 as "0-2, 5, 7-8"."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)
