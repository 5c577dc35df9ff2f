"""The ordered-commit loop: one reader takes a consumer's records in partition order, runs up to
`concurrency` of them at once, and commits each partition's offsets itself, never past an offset
nobody settled.

Offsets are the delicate part. A commit says "everything below this offset has reached its end", so
the loop keeps, per partition, the next offset it must *receive* (`expected`: the group's committed
offset at assignment, or the log's start, then each received offset + 1) and the offsets received but
not yet settled. The commit point is the lowest unsettled offset, else `expected`. A record past
`expected` is a gap: either the consumer dropped records it had fetched (Faust drops a paused
partition's records after the client's position moved past them) or Kafka left the offsets empty
itself (transaction markers, aborted records, compaction). The loop cannot tell which from the
record, so it seeks back to `expected` and skips everything past the gap until the re-read arrives:
the first record of the re-read says where the log really resumes, and only then are the missing
offsets taken as Kafka's own gaps.

Pausing: a message waiting on a dependency steps aside (its slot goes to other partitions) and its
partition is paused so its next messages do not pile up behind it. On resume the partition seeks back
to `expected`: whatever the consumer dropped while paused is fetched again (quix-streams pauses and
seeks back for the same reason).

Ownership: each message is handed to the handler as a Delivery, under a Lease granted here on its
partition's epoch (worker/handler.py); a pause of the process longer than the group session since the
grant ends the lease as a revocation does. A revocation ends the epoch, cancels the partition's work
and forgets its state; the new owner starts from the committed offset. This module is plain asyncio
over a `Consumer` protocol: the unit tests drive it with a fake consumer that drops fetched records on
pause, as Faust does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from pipeline.worker.delivery import Delivery, Lease, Outcome

log = logging.getLogger("callstream.worker")

COMMIT_EVERY_S = 1.0
SEEK_RETRY_S = 2.0      # a seek whose re-read has not arrived by then is issued again
SEEK_TRIES = 5          # after that many, the first record at or past the target is taken as the log's next
FINAL_COMMIT_S = 2.0    # how long a revocation or a stop waits for its last commit (a miss only means redoing)


class CommitRefused(Exception):
    """The group moved the partitions before the commit arrived: their new owner starts from the last
    commit that did (and redoes, without duplicating, what this worker settled since)."""


class Consumer(Protocol):
    """What the loop needs of the Kafka consumer (worker/app.py adapts Faust's; the tests a fake)."""

    def assignment(self) -> Any: ...
    async def pause(self, tp: Any) -> None: ...
    async def resume(self, tp: Any) -> None: ...
    async def seek(self, tp: Any, offset: int) -> None: ...
    async def start(self, tp: Any) -> int:
        """Where the group reads the partition from: its committed offset, else the log's start."""
    async def commit(self, offsets: Mapping[Any, int]) -> None: ...


class Handler(Protocol):
    async def handle(self, msg: Delivery) -> Outcome: ...


class UnreadableBatch:
    """Where a placeholder record carries its checksum: the consumer could not read the record batch at
    this offset (worker/transport.py). Made by the client, never from a message's bytes, so no
    producer can forge one."""

    def __init__(self, detail: str) -> None:
        self.detail = detail

    def __repr__(self) -> str:
        return f"UnreadableBatch({self.detail!r})"


def unreadable(message: Any) -> str | None:
    """What made the record at this offset unreadable, or None for a record that was read."""
    mark = getattr(message, "checksum", None)
    return mark.detail if isinstance(mark, UnreadableBatch) else None


class Receipt(Enum):
    ACCEPT = "accept"   # the next offset: process it
    SKIP = "skip"       # already received, or read ahead of a seek: it comes again in order
    SEEK = "seek"       # a gap before it: seek back to the partition's expected offset


@dataclass
class Seek:
    target: int
    high: float          # the record that revealed the gap; later ones were read ahead of the seek
    since: float
    tries: int = 1


@dataclass
class PartitionState:
    """One partition within one epoch of ownership."""
    epoch: int
    expected: int | None = None             # next offset to receive; None until the base is known
    open: set[int] = field(default_factory=set)     # received, not yet settled
    committed: int | None = None            # the last commit point this worker committed (or its base)
    paused: int = 0
    seeking: Seek | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def commit_point(self) -> int | None:
        """Every offset below this one has reached its end (or is one of Kafka's own gaps)."""
        if self.open:
            return min(self.open)
        return self.expected


class Partitions:
    """Everything this worker knows of the partitions it owns: epochs (for fencing), what was
    received and settled, pauses and seeks, and what to commit. One object, so a revocation updates
    all of it at once."""

    def __init__(self) -> None:
        self._epochs: dict[Any, int] = {}
        self._state: dict[Any, PartitionState] = {}
        # Set when the process was stopped longer than its session: every partition is presumed lost
        # until the group's next assignment says which are still ours.
        self.suspended = False
        self._revoked = asyncio.Event()

    # --- ownership -----------------------------------------------------------------------------
    def epoch(self, tp: Any) -> int:
        return self._epochs.get(tp, 0)

    def held(self, tp: Any, epoch: int) -> bool:
        return not self.suspended and self.epoch(tp) == epoch

    def current(self, tp: Any) -> PartitionState | None:
        """The partition's state in its current epoch, if it was received in it."""
        st = self._state.get(tp)
        return st if st is not None and st.epoch == self.epoch(tp) else None

    def state(self, tp: Any) -> PartitionState:
        st = self._state.get(tp)
        if st is None or st.epoch != self.epoch(tp):
            st = self._state[tp] = PartitionState(self.epoch(tp))
        return st

    def revoke(self, tps: Any) -> tuple[int, dict[Any, int]]:
        """End the partitions' epochs and cancel their work; returns (tasks cancelled, the commit
        points to commit before the partitions go)."""
        cancelled, final = 0, {}
        for tp in tps:
            self._epochs[tp] = self.epoch(tp) + 1
            st = self._state.pop(tp, None)
            if st is None:
                continue
            point = st.commit_point()
            if point is not None and (st.committed is None or point > st.committed):
                final[tp] = point
            for task in st.tasks:
                cancelled += not task.done()
                task.cancel()
        event, self._revoked = self._revoked, asyncio.Event()
        event.set()
        return cancelled, final

    async def revoked_within(self, tp: Any, epoch: int, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while self.epoch(tp) == epoch and (left := end - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._revoked.wait(), left)
            except TimeoutError:
                break
        return self.epoch(tp) != epoch

    # --- receipt and settlement ----------------------------------------------------------------
    def receive(self, tp: Any, offset: int, now: float) -> Receipt:
        st = self.state(tp)
        assert st.expected is not None, "the base offset is set before the first receipt"
        if (seek := st.seeking) is not None:
            if offset < seek.target:
                return Receipt.SKIP
            if offset > seek.high:
                return Receipt.SKIP           # read ahead of the seek: it comes again after the re-read
            if offset > seek.target:
                log.info("%s: offsets %d-%d are not in the log (Kafka's own gap: transaction markers, aborted "
                         "or compacted records)", _name(tp), seek.target, offset - 1)
            st.seeking = None
        elif offset < st.expected:
            return Receipt.SKIP               # received already (a re-read after a seek)
        elif offset > st.expected:
            st.seeking = Seek(st.expected, offset, now)
            return Receipt.SEEK
        st.expected = offset + 1
        st.open.add(offset)
        return Receipt.ACCEPT

    def finish(self, tp: Any, epoch: int, offset: int) -> None:
        st = self._state.get(tp)
        if st is not None and st.epoch == epoch:
            st.open.discard(offset)

    def next_unsettled(self, tp: Any) -> int | None:
        st = self._state.get(tp)
        return None if st is None else st.commit_point()

    def commits_due(self) -> dict[Any, int]:
        due = {}
        for tp, st in self._state.items():
            point = st.commit_point()
            if point is not None and (st.committed is None or point > st.committed):
                due[tp] = point
        return due

    def committed(self, offsets: Mapping[Any, int], epochs: Mapping[Any, int]) -> None:
        for tp, point in offsets.items():
            st = self._state.get(tp)
            if st is not None and st.epoch == epochs.get(tp) and (st.committed is None or point > st.committed):
                st.committed = point

    def overdue_seeks(self, now: float) -> list[tuple[Any, int]]:
        """Seeks whose re-read has not come: issue them again; after SEEK_TRIES, take whatever record
        comes first at or past the target (the records up to the gap are gone from the log)."""
        out = []
        for tp, st in self._state.items():
            seek = st.seeking
            if seek is None or now - seek.since < SEEK_RETRY_S:
                continue
            seek.tries += 1
            seek.since = now
            if seek.tries > SEEK_TRIES and seek.high != math.inf:
                log.warning("%s: the re-read from offset %d never reached offset %d; taking the next record the "
                            "log has", _name(tp), seek.target, int(seek.high))
                seek.high = math.inf
            out.append((tp, seek.target))
        return out


def _name(tp: Any) -> str:
    return f"{getattr(tp, 'topic', '?')}/{getattr(tp, 'partition', tp)}"


async def commit(consumer: Consumer, book: Partitions, offsets: Mapping[Any, int],
                 within_s: float | None = None) -> bool:
    """Commit the given points; a failure is logged and only means the next owner redoes a little."""
    if not offsets:
        return True
    epochs = {tp: book.epoch(tp) for tp in offsets}
    try:
        await asyncio.wait_for(consumer.commit(offsets), within_s)
    except asyncio.CancelledError:
        raise
    except CommitRefused:
        log.info("offsets of partitions %s not committed: the group has moved them already",
                 sorted(getattr(tp, "partition", tp) for tp in offsets))
        return False
    except Exception as exc:
        log.warning("offsets not committed this time (%s: %s); they are committed with the next ones",
                    type(exc).__name__, exc)
        return False
    book.committed(offsets, epochs)
    return True


async def consume(events: AsyncIterable[Any], handler: Handler, consumer: Consumer, book: Partitions, *,
                  concurrency: int, session_timeout_s: float, commit_every_s: float = COMMIT_EVERY_S) -> None:
    """Run until `events` ends or the loop is cancelled. `events` yields Faust-shaped events (an
    `.message` with topic, partition, offset, key, value, headers, timestamp and tp). On the way out,
    unfinished messages stay uncommitted, so the next owner processes them again."""
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def pause(tp: Any, st: PartitionState) -> None:
        st.paused += 1
        if st.paused == 1:
            await consumer.pause(tp)

    async def resume(tp: Any, st: PartitionState) -> None:
        if book.current(tp) is not st:
            return  # revoked meanwhile: not ours to resume
        st.paused -= 1
        if st.paused == 0:
            await consumer.resume(tp)
            # The consumer may have dropped records it fetched while the partition was paused (Faust
            # does, after its client's position moved past them): read again from the next one due.
            if st.expected is not None and st.seeking is None:
                await consumer.seek(tp, st.expected)

    def release(slot: dict[str, bool], _: asyncio.Task[None]) -> None:
        if slot["held"]:
            slots.release()

    async def run(event: Any, st: PartitionState, slot: dict[str, bool]) -> None:
        m = event.message
        epoch = st.epoch

        @asynccontextmanager
        async def step_aside() -> AsyncIterator[None]:
            """Waiting on a dependency: the slot goes to other partitions, and this one is not
            fetched further (its next messages would only wait behind this one)."""
            slots.release()
            slot["held"] = False
            await pause(m.tp, st)
            try:
                yield
            finally:
                await resume(m.tp, st)
                if book.epoch(m.tp) == epoch:  # still ours: a slot back before working again
                    await slots.acquire()
                    slot["held"] = True

        while True:
            lease = Lease.grant(lambda: book.held(m.tp, epoch), step_aside, pause_limit_s=session_timeout_s)
            outcome = await handler.handle(Delivery(m.topic, m.partition, m.offset, m.key, m.value, m.headers,
                                                    m.timestamp, lease, unreadable(m)))
            if outcome is not Outcome.REVOKED:
                break
            # Fenced by a stop of the process: the group revokes the partition within a heartbeat or
            # two. If it stays ours all the same, nobody else processed the message: do it again.
            if await book.revoked_within(m.tp, epoch, 3 * session_timeout_s):
                return
            book.suspended = False
            log.warning("%s/%d still assigned after a stop: processing offset %d again",
                        m.topic, m.partition, m.offset)
        event.value = m.value = None
        book.finish(m.tp, epoch, m.offset)

    async def committer() -> None:
        while True:
            await asyncio.sleep(commit_every_s)
            await commit(consumer, book, book.commits_due())
            for tp, target in book.overdue_seeks(loop.time()):
                await _seek(tp, target)

    async def _seek(tp: Any, target: int) -> None:
        try:
            await consumer.seek(tp, target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. revoked meanwhile; the retry timer seeks again if still ours
            log.warning("%s: seek to %d failed (%s)", _name(tp), target, exc)

    commits = asyncio.create_task(committer())
    try:
        async for event in events:
            m = event.message
            tp = m.tp
            if tp not in consumer.assignment():
                continue  # fetched before a revocation: the partition's new owner has it
            st = book.state(tp)
            if st.expected is None:
                base = await consumer.start(tp)
                if book.current(tp) is not st:
                    continue  # revoked while asking; the new epoch starts over
                st.expected = st.committed = base
            receipt = book.receive(tp, m.offset, loop.time())
            if receipt is Receipt.SKIP:
                if st.seeking is not None and m.offset > st.seeking.high:
                    # The consumer's read-ahead moved past the seek: seek again, so the re-read is not
                    # dropped as already read (Faust drops offsets below its own last read).
                    await _seek(tp, st.seeking.target)
                continue
            if receipt is Receipt.SEEK:
                assert st.seeking is not None
                log.warning("%s: offset %d received while %d is due: seeking back to %d (a record the "
                            "consumer dropped is read again)", _name(tp), m.offset, st.seeking.target,
                            st.seeking.target)
                await _seek(tp, st.seeking.target)
                continue
            await slots.acquire()
            slot = {"held": True}
            task = asyncio.create_task(run(event, st, slot))
            # Released when the task ends however it ends: a task cancelled before it ever ran (a
            # revocation right after receipt) runs no `finally` of its own.
            task.add_done_callback(functools.partial(release, slot))
            running.add(task)
            st.tasks.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(st.tasks.discard)
            if book.current(tp) is not st:   # revoked while waiting for a slot: never runs
                task.cancel()
    finally:
        commits.cancel()
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.wait(list(running), timeout=5)
        try:
            await commit(consumer, book, book.commits_due(), within_s=FINAL_COMMIT_S)
        except asyncio.CancelledError:
            pass
