"""The ordered-ack loop with fakes: a message waiting on a dependency gives its slot to other
partitions, a revoked partition's work is cancelled and never acknowledged, and slots never leak."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pipeline.worker.consume import Assignment, OffsetGate, consume


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    headers: Any = ()
    timestamp: float | None = None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class Event:
    message: Msg
    value: Any = b"v"


@dataclass
class FakeConsumer:
    assigned: set = field(default_factory=lambda: {TP("c", 0), TP("c", 1)})
    paused: list = field(default_factory=list)
    resumed: list = field(default_factory=list)

    def assignment(self):
        return set(self.assigned)

    def pause_partitions(self, tps):
        self.paused += list(tps)

    def resume_partitions(self, tps):
        self.resumed += list(tps)


class Handler:
    """Partition 0's first message waits on `dependency` stepped aside; everything else is done at once."""

    def __init__(self):
        self.dependency = asyncio.Event()
        self.started: list[tuple[int, int]] = []

    async def handle(self, topic, partition, offset, key, value, headers, timestamp=None, lease=None):
        self.started.append((partition, offset))
        if (partition, offset) == (0, 0):
            async with lease.step_aside():
                await self.dependency.wait()
            if not lease.held():
                return "revoked"
        await asyncio.sleep(0)
        return "done"


async def feed(queue):
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item


def test_a_message_waiting_on_a_dependency_lets_other_partitions_flow():
    async def go():
        h, consumer, acked, q = Handler(), FakeConsumer(), [], asyncio.Queue()

        async def ack(event):
            acked.append((event.message.partition, event.message.offset))

        loop = asyncio.create_task(consume(feed(q), h, consumer, ack, Assignment(), OffsetGate(), {},
                                           concurrency=1, session_timeout_s=6.0))
        for e in [Event(Msg("c", 0, 0)), Event(Msg("c", 1, 0)), Event(Msg("c", 1, 1)), Event(Msg("c", 1, 2))]:
            await q.put(e)
        for _ in range(50):
            await asyncio.sleep(0.01)
        flowing = list(acked)
        paused = list(consumer.paused)
        h.dependency.set()
        for _ in range(20):
            await asyncio.sleep(0.01)
        await q.put(None)
        await asyncio.wait_for(loop, 5)
        return flowing, paused, acked, consumer
    flowing, paused, acked, consumer = asyncio.run(go())
    # One slot: partition 1's messages were all done while partition 0's waited, its partition paused.
    assert flowing == [(1, 0), (1, 1), (1, 2)] and paused == [TP("c", 0)]
    assert acked[-1] == (0, 0) and consumer.resumed == [TP("c", 0)]


def test_a_revoked_partition_is_cancelled_never_acknowledged_and_its_slots_come_back():
    async def go():
        h, consumer, acked, q = Handler(), FakeConsumer(), [], asyncio.Queue()
        owned, gate = Assignment(), OffsetGate()

        async def ack(event):
            acked.append((event.message.partition, event.message.offset))

        loop = asyncio.create_task(consume(feed(q), h, consumer, ack, owned, gate, {}, concurrency=1,
                                           session_timeout_s=6.0))
        await q.put(Event(Msg("c", 0, 0)))      # waits on the dependency, stepped aside
        await asyncio.sleep(0.05)
        await q.put(Event(Msg("c", 0, 1)))      # takes the slot, then is revoked before it even runs
        await asyncio.sleep(0)
        cancelled = owned.revoke([TP("c", 0)])
        gate.forget(TP("c", 0))
        consumer.assigned.discard(TP("c", 0))
        await q.put(Event(Msg("c", 0, 2)))      # fetched before the revocation: skipped
        await q.put(Event(Msg("c", 1, 0)))      # another partition still gets a slot
        for _ in range(20):
            await asyncio.sleep(0.01)
        await q.put(None)
        await asyncio.wait_for(loop, 5)
        return cancelled, acked, h.started
    cancelled, acked, started = asyncio.run(go())
    assert cancelled >= 1 and acked == [(1, 0)] and (0, 2) not in started
