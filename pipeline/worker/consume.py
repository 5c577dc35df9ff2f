"""The ordered-ack loop: one reader takes a consumer's events in partition order and runs up to
`concurrency` of them at once, acknowledging each partition's offsets strictly in order.

Offsets are the delicate part: Faust commits the highest run of acknowledged offsets it sees, so
acknowledging a fast later message while an earlier one is still running would let the commit pass
the earlier one, and a crash would lose it. The OffsetGate acknowledges a partition's messages in
offset order, each only once its end (rows or dead letter) is committed.

Ownership: each message is worked on under a Lease on its partition's epoch (worker/handler.py). A
revocation ends the epoch, cancels the partition's work and forgets its offsets; the new owner
processes them. A message waiting on a dependency steps aside: its slot goes to other partitions and
its own partition is paused, so one waiting message never holds up the rest.

This is a plain function of (events, handler, consumer): tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from pipeline.worker.handler import Lease

log = logging.getLogger("callstream.worker")


class Partitions(Protocol):
    """What the loop needs of the consumer (Faust's app.consumer)."""

    def assignment(self) -> Any: ...
    def pause_partitions(self, tps: Iterable[Any]) -> None: ...
    def resume_partitions(self, tps: Iterable[Any]) -> None: ...


class Handler(Protocol):
    async def handle(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     headers: Any, timestamp: float | None = None, lease: Lease | None = None) -> str: ...


Ack = Callable[[Any], Awaitable[Any]]


class OffsetGate:
    """Per partition, the offsets in flight; releases finished ones only below the lowest unfinished.

    Messages of a partition are begun in the order the single reader receives them, which is offset
    order; they may finish in any order."""

    def __init__(self) -> None:
        self._open: dict[Any, dict[int, Any]] = {}

    def begin(self, tp: Any, offset: int) -> None:
        self._open.setdefault(tp, {})[offset] = None

    def finish(self, tp: Any, offset: int, token: Any) -> list[Any]:
        """Mark `offset` finished; returns the tokens that may now be acknowledged, in offset order."""
        entries = self._open.get(tp)
        if entries is None or offset not in entries:  # revoked since it began
            return []
        entries[offset] = token
        released = []
        for off in sorted(entries):
            if entries[off] is None:
                break
            released.append(entries.pop(off))
        if not entries:
            del self._open[tp]
        return released

    def pending(self) -> int:
        return sum(len(e) for e in self._open.values())

    def forget(self, tp: Any) -> None:
        """The partition was revoked: its messages are the new owner's, none of them is acknowledged here."""
        self._open.pop(tp, None)

    def lowest(self, tp: Any) -> int | None:
        """The lowest offset of the partition still in flight."""
        entries = self._open.get(tp)
        return min(entries) if entries else None


class Assignment:
    """What this worker owns, for fencing: each partition's revocation count (its epoch). A message is
    worked on under a lease on the epoch it was received in; a revocation ends all leases of the
    partition, cancels their work and forgets their offsets."""

    def __init__(self) -> None:
        self.epochs: dict[Any, int] = {}
        self.tasks: dict[Any, set[asyncio.Task[None]]] = {}
        self.paused: dict[Any, int] = {}
        # Set when the process was stopped longer than its session: every partition is presumed lost
        # until the group's next assignment says which are still ours.
        self.suspended = False
        self._revoked = asyncio.Event()

    def held(self, tp: Any, epoch: int) -> bool:
        return not self.suspended and self.epoch(tp) == epoch

    def epoch(self, tp: Any) -> int:
        return self.epochs.get(tp, 0)

    def revoke(self, tps: Any) -> int:
        cancelled = 0
        for tp in tps:
            self.epochs[tp] = self.epoch(tp) + 1
            self.paused.pop(tp, None)   # the consumer forgets its pauses of revoked partitions too
            for task in self.tasks.pop(tp, set()):
                cancelled += not task.done()
                task.cancel()
        event, self._revoked = self._revoked, asyncio.Event()
        event.set()
        return cancelled

    async def revoked_within(self, tp: Any, epoch: int, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while self.epoch(tp) == epoch and (left := end - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._revoked.wait(), left)
            except TimeoutError:
                break
        return self.epoch(tp) != epoch


async def consume(events: AsyncIterable[Any], handler: Handler, partitions: Partitions, ack: Ack,
                  owned: Assignment, gate: OffsetGate, acked_next: dict[Any, int], *, concurrency: int,
                  session_timeout_s: float) -> None:
    """Run until `events` ends or the loop is cancelled. `events` yields Faust-shaped events (an
    `.message` with topic, partition, offset, key, value, headers, timestamp and tp); `ack(event)`
    acknowledges one. On the way out, unfinished messages stay unacknowledged, so the next owner
    processes them again."""
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    def pause(tp: Any) -> None:
        owned.paused[tp] = owned.paused.get(tp, 0) + 1
        if owned.paused[tp] == 1:
            partitions.pause_partitions({tp})

    def resume(tp: Any, epoch: int) -> None:
        if owned.epoch(tp) != epoch or tp not in owned.paused:
            return  # revoked meanwhile: not ours to resume
        owned.paused[tp] -= 1
        if owned.paused[tp] == 0:
            del owned.paused[tp]
            partitions.resume_partitions({tp})

    def release(slot: dict[str, bool], _: asyncio.Task[None]) -> None:
        if slot["held"]:
            slots.release()

    async def run(event: Any, epoch: int, slot: dict[str, bool]) -> None:
        m = event.message

        @asynccontextmanager
        async def step_aside() -> AsyncIterator[None]:
            """Waiting on a dependency: the slot goes to other partitions, and this one is not
            fetched further (its next messages would only wait behind this one)."""
            slots.release()
            slot["held"] = False
            pause(m.tp)
            try:
                yield
            finally:
                resume(m.tp, epoch)
                if owned.epoch(m.tp) == epoch:  # still ours: a slot back before working again
                    await slots.acquire()
                    slot["held"] = True

        lease = Lease(held=lambda: owned.held(m.tp, epoch), step_aside=step_aside)
        while True:
            outcome = await handler.handle(m.topic, m.partition, m.offset, m.key, m.value, m.headers,
                                           m.timestamp, lease)
            if outcome != "revoked":
                break
            # Fenced by a stop of the process: the group revokes the partition within a heartbeat or
            # two. If it stays ours all the same, nobody else processed the message: do it again.
            if await owned.revoked_within(m.tp, epoch, 3 * session_timeout_s):
                return
            owned.suspended = False
            log.warning("%s/%d still assigned after a stop: processing offset %d again",
                        m.topic, m.partition, m.offset)
        # The payload is no longer needed while the ack may wait for an earlier, slower message;
        # the event holds its own reference to it besides the message's.
        event.value = m.value = None
        for done in gate.finish(m.tp, m.offset, event):
            await ack(done)
            acked_next[m.tp] = done.message.offset + 1

    try:
        async for event in events:
            tp = event.message.tp
            if tp not in partitions.assignment():
                continue  # fetched before a revocation: the partition's new owner has it
            gate.begin(tp, event.message.offset)  # at once: receipt order is offset order
            await slots.acquire()
            slot = {"held": True}
            task = asyncio.create_task(run(event, owned.epoch(tp), slot))
            # Released when the task ends however it ends: a task cancelled before it ever ran (a
            # revocation right after receipt) runs no `finally` of its own.
            task.add_done_callback(functools.partial(release, slot))
            running.add(task)
            owned.tasks.setdefault(tp, set()).add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(owned.tasks[tp].discard)
    finally:
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.wait(list(running), timeout=5)

