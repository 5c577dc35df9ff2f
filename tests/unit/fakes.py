"""Fakes for the per-message policy: each stands in for one dependency and can be told to fail."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from pipeline.contract import ChunkMeta
from pipeline.errors import AlreadySettled
from pipeline.shared.fusion import Evidence
from pipeline.store.models import CallRow, Heard, LedgerEnd, LedgerEntry, PieceRow, TalkRow, UtteranceRow
from pipeline.worker.consume import CommitRefused
from pipeline.worker.delivery import Delivery, Lease, Outcome
from pipeline.worker.process import Timings
from pipeline.worker.triton_client import Item


@dataclass
class FakeWriter:
    commits: list[tuple[CallRow, list[PieceRow], LedgerEntry]] = field(default_factory=list)
    failures: list[tuple[CallRow | None, LedgerEntry]] = field(default_factory=list)
    commit_errors: list[BaseException] = field(default_factory=list)     # raised one per call, then succeed
    failure_errors: list[BaseException] = field(default_factory=list)
    up: bool = True

    done: dict[tuple[str, int, int], str] = field(default_factory=dict)   # (topic, partition, offset) -> worker
    late_notes: list[str] = field(default_factory=list)

    failed: dict[tuple[str, int, int], LedgerEntry] = field(default_factory=dict)   # the failed rows by offset
    dead_lettered: set[tuple[str, int, int]] = field(default_factory=set)
    # Called inside record_failure once the row is written, before it returns: a test's interleaving.
    after_failure_row: list = field(default_factory=list)

    async def commit_chunk(self, call: CallRow, rows: list[PieceRow], ledger: LedgerEntry,
                           utterances: Sequence[UtteranceRow] = (), heard: Sequence[Heard] = (),
                           talk: Sequence[TalkRow] = ()) -> float:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        if (ledger["topic"], ledger["partition"], ledger["offset"]) in self.failed:   # the first end stands
            raise AlreadySettled("failed")
        self.commits.append((call, rows, ledger))
        self.done.setdefault((ledger["topic"], ledger["partition"], ledger["offset"]), ledger["worker"])
        return 1.0

    async def record_failure(self, call: CallRow | None, ledger: LedgerEntry) -> bool:
        if self.failure_errors:
            raise self.failure_errors.pop(0)
        key = (ledger["topic"], ledger["partition"], ledger["offset"])
        if key in self.done:
            self.late_notes.append(f"a later attempt by {ledger.get('worker')} failed ({ledger.get('error_reason')}); "
                                   "the first end stands")
            return False
        self.failures.append((call, ledger))
        self.failed.setdefault(key, ledger)
        for hook in self.after_failure_row:
            await hook()
        return True

    async def end_of(self, topic: str, partition: int, offset: int) -> LedgerEnd | None:
        key = (topic, partition, offset)
        if key in self.done:
            return LedgerEnd("done", False, None, None, self.done[key])
        if key in self.failed:
            row = self.failed[key]
            return LedgerEnd("failed", key in self.dead_lettered, row.get("error_reason"), row.get("error_detail"),
                             row.get("worker"))
        return None

    async def mark_dead_lettered(self, topic: str, partition: int, offset: int) -> None:
        if (topic, partition, offset) in self.failed:
            self.dead_lettered.add((topic, partition, offset))

    async def done_at(self, topic: str, partition: int, offset: int) -> str | None:
        return self.done.get((topic, partition, offset))

    async def ping(self) -> bool:
        return self.up

    erased: set[str] = field(default_factory=set)
    refused: list[LedgerEntry] = field(default_factory=list)

    async def erased_tracks(self, call_id: str) -> set[str]:
        return {"*"} if call_id in self.erased else set()

    async def record_refused(self, ledger: LedgerEntry) -> None:
        self.refused.append(ledger)

    committed: dict[tuple[str, str, int], str] = field(default_factory=dict)   # (call, stream, seq) -> source
    redeliveries: list[LedgerEntry] = field(default_factory=list)

    async def committed_at(self, call_id: str, stream: str, seq: int) -> str | None:
        return self.committed.get((call_id, stream, seq))

    async def record_redelivery(self, ledger: LedgerEntry) -> None:
        self.redeliveries.append(ledger)


@dataclass
class FakeDLQ:
    sent: list[tuple[bytes | None, bytes | None, list]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    async def __call__(self, key: bytes | None, value: bytes | None, headers: list) -> None:
        if self.errors:
            raise self.errors.pop(0)
        # As aiokafka's producer: a record with neither key nor value is refused before it is sent.
        assert key is not None or value is not None, "Need at least one: key or value"
        self.sent.append((key, value, headers))

    def reasons(self) -> list[str]:
        return [dict(h)["dlq-reason"].decode() for _, _, h in self.sent]


@dataclass
class FakeProcessor:
    """Returns one row, or raises the next queued error."""
    errors: list[BaseException] = field(default_factory=list)
    calls: int = 0

    async def process(self, meta: ChunkMeta, value: bytes | None) -> tuple[list[PieceRow], Timings]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        piece = {"call_id": meta.call_id, "participant_id": "customer", "cell_ms": meta.start_ms,
                 "start_ms": meta.start_ms, "end_ms": meta.start_ms + 1000}   # what the handler reads of a piece
        return [cast(PieceRow, piece)], Timings(size_bytes=len(value or b""))


class FakeTriton:
    """Stands in for the emotion model: 'neutral' wherever anything was observed."""

    def __init__(self, voice_window_ms: int = 0) -> None:
        self.items = 0
        self.voice_window_ms = voice_window_ms   # as EmotionClient learns it from the model's config
        self.windows: list[np.ndarray | None] = []   # each item's voice window, in the order items came
        self.requests = 0                            # calls of infer: one per decoded window

    async def infer(self, items: list[Item], parallel: bool = True) -> list[Evidence]:
        self.requests += 1
        self.items += len(items)
        self.windows += [item.voice for item in items]
        out = []
        for item in items:
            faces = len(item.frames)
            out.append(Evidence(frames=faces, faces=faces, face_weight=0.99 * faces,
                                face_probs=np.array([1.0, 0, 0, 0, 0, 0, 0]) if faces else None,
                                audio_ms=len(item.audio) // 16, speech_ratio=0.5 if len(item.audio) else 0.0,
                                arousal=0.5 if len(item.audio) else None))
        return out


class FakeSpeech:
    """Stands in for the speech model: a share of loud samples per item, as SpeechClient returns it. It is
    given audio only (its signature takes nothing else), so a test can see whose audio reached it."""

    version = "fake-vad/1"
    min_speech_ratio = 0.2

    def __init__(self) -> None:
        self.audios: list[np.ndarray] = []

    async def ratios(self, audios: list[np.ndarray]) -> list[float]:
        self.audios += audios
        return [float(np.mean(np.abs(a) > 0.02)) if len(a) else 0.0 for a in audios]


if TYPE_CHECKING:   # mypy checks the fakes against the seams the handler declares
    from pipeline.worker.handler import DeadLetter, Ledger, Processor

    _ledger: Ledger = FakeWriter()
    _processor: Processor = FakeProcessor()
    _dead_letter: DeadLetter = FakeDLQ()


def delivery(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, headers: object,
             timestamp: float | None = None, lease: Lease | None = None, unreadable: str | None = None) -> Delivery:
    """A delivery as the consumer loop hands one over; its lease always holds unless one is given."""
    return Delivery(topic, partition, offset, key, value, headers, timestamp, lease or Lease(), unreadable)


# The consumer's side: a Kafka client as Faust's behaves, and a handler that only records.

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
    checksum: Any = None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class Event:
    message: Msg
    value: Any = b"v"


@dataclass
class FakeKafka:
    """`logs`: the offsets each partition holds (a missing offset is a transaction marker, an aborted or
    compacted record). Fetches `batch` records at a time from the position, which moves past them at
    once; records of a partition paused while its batch is handed over are dropped, as Faust drops them."""
    logs: dict[TP, list[int]]
    batch: int = 4
    committed_at: dict[TP, int] = field(default_factory=dict)
    position: dict[TP, int] = field(default_factory=dict)
    paused: set[TP] = field(default_factory=set)
    dropped: list[tuple[int, int]] = field(default_factory=list)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    commits: list[dict[TP, int]] = field(default_factory=list)
    assigned: set[TP] = field(default_factory=set)
    lose_once: set[tuple[int, int]] = field(default_factory=set)   # records the client loses once, unpaused
    refuse_commits: int = 0   # commits refused first, as after a rebalance the worker has not seen yet

    def __post_init__(self) -> None:
        self.assigned = set(self.logs)
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=2)

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def pause(self, tp: TP) -> None:
        self.paused.add(tp)

    async def resume(self, tp: TP) -> None:
        self.paused.discard(tp)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp.partition, offset))
        self.position[tp] = offset

    async def start(self, tp: TP) -> int:
        return self.committed_at.get(tp, 0)

    async def commit(self, offsets: dict[TP, int]) -> None:
        if self.refuse_commits:
            self.refuse_commits -= 1
            raise CommitRefused("the group has already rebalanced")
        self.commits.append(dict(offsets))
        self.committed_at.update(offsets)

    async def fetch(self) -> None:
        while True:
            fetched = False
            for tp in sorted(self.assigned - self.paused, key=lambda t: t.partition):
                pos = self.position.get(tp, self.committed_at.get(tp, 0))
                batch = [o for o in self.logs[tp] if o >= pos][: self.batch]
                if not batch:
                    continue
                fetched = True
                self.position[tp] = batch[-1] + 1
                for off in batch:   # the batch is handed over even if a seek moved the position since
                    if tp in self.paused or (tp.partition, off) in self.lose_once:
                        self.lose_once.discard((tp.partition, off))
                        self.dropped.append((tp.partition, off))
                        continue
                    await self.queue.put(Event(Msg(tp.topic, tp.partition, off)))
            await asyncio.sleep(0 if fetched else 0.005)

    async def events(self) -> AsyncIterator[Event]:
        while (item := await self.queue.get()) is not None:
            yield item


class FakeHandler:
    """Settles what the consumer loop hands over, recording every offset. Offsets in `waits` step aside
    until `dependency` is set, as a message waiting on Triton does; the others take a random moment."""

    def __init__(self, waits: Set[tuple[int, int]] = frozenset(), seed: int = 0) -> None:
        self.dependency = asyncio.Event()
        self.waits = set(waits)
        self.settled: list[tuple[int, int]] = []
        self.unreadable: dict[tuple[int, int], str] = {}
        self.changed = asyncio.Event()
        self.rng = random.Random(seed)

    async def handle(self, msg: Delivery) -> Outcome:
        at = (msg.partition, msg.offset)
        if msg.unreadable is not None:
            self.unreadable[at] = msg.unreadable
        if at in self.waits:
            async with msg.lease.step_aside():
                await self.dependency.wait()
        await asyncio.sleep(self.rng.random() * 0.004)
        if msg.lease.lost() is not None:
            return Outcome.REVOKED
        self.settled.append(at)
        self.changed.set()
        return Outcome.DONE
