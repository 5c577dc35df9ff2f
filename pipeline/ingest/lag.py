"""How far the consumer group is behind, and how deep a topic is: read from the broker's own offsets
(the group's committed offsets and each partition's end), so `callstream status` needs no worker."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

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
    return KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, client_id="callstream-status",
                         enable_auto_commit=False, **bootstrap_within(KafkaConsumer, CONNECT_TIMEOUT_S),
                         **kafka_python_kwargs(settings))


def group_lag(settings: Settings, topic: str | None = None, group: str | None = None) -> list[PartitionLag]:
    topic, group = topic or settings.chunks_topic, group or settings.app_id
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="callstream-status",
                             **bootstrap_within(KafkaAdminClient, CONNECT_TIMEOUT_S), **kafka_python_kwargs(settings))
    consumer = _consumer(settings)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        ends, starts = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        committed = {tp.partition: om.offset for tp, om in admin.list_group_offsets(group).get(group, {}).items()
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
        ends, starts = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        consumer.close()
