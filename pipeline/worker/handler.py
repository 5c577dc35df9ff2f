"""Per-message policy: the one place that decides a message's fate (done, dead-lettered, or retried).

Every message reaches exactly one end: its rows are committed, or it is on the dead-letter topic with
its reason and a `failed` ledger row. Nothing escapes `handle` but cancellation (a graceful stop: the
offset is not acknowledged, so the next owner processes the message again).

- BadChunk: the chunk's fault. Dead-letter at once.
- TransientFault: a dependency's fault. Retry with capped exponential backoff while the offset holds.
  After `max_attempts` the handler asks that dependency whether it is up: if it answers, the failure
  is about this message after all, and it is dead-lettered as `retries_exhausted`; if not, the
  dependency really is down and waiting is right.
- Anything else is a bug, and costs one chunk (`processing_error`), never the worker.

Fencing: a message is worked on under a Lease from the consumer. A partition revoked from this worker
(or a pause of the process long enough to lose its group membership) ends the lease; from then on the
message's work writes nothing (no rows, no ledger row, no dead letter) and its outcome is 'revoked':
the partition's new owner processes it. And the ledger never turns a chunk that is `done` at its offset
into `failed`: a late failing attempt is kept as a note on the done row, without a dead letter.

Waiting: while a dependency is down, the message steps aside (the consumer gives its slot to other
partitions and stops fetching its own) and probes the dependency every PROBE_S, so the retry comes as
soon as it answers rather than when the backoff ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, cast

from pipeline.contract import H_DLQ_PAYLOAD, ChunkMeta, bounded, call_id_of, dead_letter_headers, parse
from pipeline.errors import REASONS, AlreadySettled, BadChunk, Dependency, Reason, TransientFault
from pipeline.store.models import (
    CallRow,
    ChunkStatus,
    Heard,
    LedgerEnd,
    LedgerEntry,
    PieceRow,
    TalkRow,
    UtteranceRow,
)
from pipeline.worker.dead_letter import DeadLetterRejected, Headers, describe, permanent_kafka_error, raw_headers
from pipeline.worker.delivery import Delivery, Outcome
from pipeline.worker.metrics import Metrics

log = logging.getLogger("callstream.worker")
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

if TYPE_CHECKING:
    from pipeline.worker.process import Timings

DeadLetter = Callable[[bytes | None, bytes | None, Headers], Awaitable[None]]
Health = Callable[[], Awaitable[bool]]
ParkPayload = Callable[[str, bytes], Awaitable[str]]      # (source, payload) -> where it was parked
DiscardClaim = Callable[[str], Awaitable[None]]           # delete a claim-check object


class Processor(Protocol):
    """Turns a chunk into its pieces (worker/process.py's ChunkProcessor; a fake in the policy tests)."""

    async def process(self, meta: ChunkMeta, value: bytes | None) -> tuple[list[PieceRow], Timings]: ...


class Ledger(Protocol):
    """What the handler writes and asks of Postgres (store/writer.py's SegmentWriter)."""

    async def erased_tracks(self, call_id: str) -> set[str]: ...
    async def record_refused(self, ledger: LedgerEntry) -> None: ...
    async def committed_at(self, call_id: str, stream: str, seq: int) -> str | None: ...
    async def record_redelivery(self, ledger: LedgerEntry) -> None: ...
    async def commit_chunk(self, call: CallRow, pieces: list[PieceRow], ledger: LedgerEntry,
                           utterances: Sequence[UtteranceRow] = (), heard: Sequence[Heard] = (),
                           talk: Sequence[TalkRow] = ()) -> float: ...
    async def done_at(self, topic: str, partition: int, offset: int) -> str | None: ...
    async def record_failure(self, call: CallRow | None, ledger: LedgerEntry) -> bool: ...
    async def end_of(self, topic: str, partition: int, offset: int) -> LedgerEnd | None: ...
    async def mark_dead_lettered(self, topic: str, partition: int, offset: int) -> None: ...


@dataclass
class _Letter:
    """How far dead-lettering one message got, kept across its retries."""
    recorded: bool = False   # the failed row is written
    sent: bool = False       # the broker acknowledged the dead letter


def _reason(stored: str | None) -> Reason:
    """A reason read back from the ledger (written by this code, or by an older release)."""
    return cast(Reason, stored) if stored in REASONS else "processing_error"


class Fenced(Exception):
    """The lease ended: this worker must not write anything for the message any more."""


def _published_at(meta: ChunkMeta | None, timestamp: float | None = None) -> datetime | None:
    """When the chunk was published: the recorder's `published-at-ms` header, else the record's Kafka
    timestamp (every client sets one), so latency is measured for clients that do not set the header."""
    if meta and meta.published_at_ms:
        return datetime.fromtimestamp(meta.published_at_ms / 1000, UTC)
    if timestamp and timestamp > 0:
        return datetime.fromtimestamp(timestamp, UTC)
    return None


class MessageHandler:
    def __init__(self, processor: Processor, writer: Ledger, dead_letter: DeadLetter, *,
                 health: Mapping[Dependency, Health] | None = None, park_payload: ParkPayload | None = None,
                 retry_initial_s: float = 0.5, retry_max_s: float = 30.0, max_attempts: int = 6,
                 dlq_inline_limit: int = 900_000, discard_claim: DiscardClaim | None = None,
                 metrics: Metrics | None = None,
                 publish_alerts: Callable[[str], Awaitable[None]] | None = None,
                 leftover: Callable[[str], None] | None = None, probe_s: float = 0.5,
                 default_layout: str | None = None) -> None:
        """`park_payload(source, payload) -> uri` keeps a payload too large for the DLQ (claim check);
        `discard_claim(uri)` deletes a claim-check object once the chunk's rows are committed, and
        `leftover(uri)` is told of one whose delete failed (to try again later);
        `publish_alerts(call_id)` publishes the call's alerts its commit recorded."""
        self.metrics = metrics or Metrics()
        self.leftover, self.probe_s = leftover, probe_s
        self.default_layout = default_layout
        self.publish_alerts = publish_alerts
        self.discard_claim = discard_claim
        self.processor, self.writer, self.dead_letter = processor, writer, dead_letter
        self.health = dict(health or {})
        self.park_payload = park_payload
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.max_attempts, self.dlq_inline_limit = max_attempts, dlq_inline_limit

    async def handle(self, msg: Delivery) -> Outcome:
        """The delivery's end once it is committed, retrying until then; REVOKED when its lease ended
        first (nothing was written for it). An unreadable record ends as a dead letter like a bad chunk."""
        self.metrics.in_flight.inc()
        try:
            outcome, reason = await self._settle(msg)
        except Fenced as exc:
            log.warning("%s: %s; its new owner processes it, nothing was written here", msg.source, exc)
            outcome, reason = Outcome.REVOKED, ""
        finally:
            self.metrics.in_flight.dec()
        self.metrics.chunks.labels(outcome.value, reason).inc()
        return outcome

    @staticmethod
    def _fence(msg: Delivery) -> None:
        """Raise Fenced unless this worker still owns the message: called before every write."""
        if (why := msg.lease.lost()) is not None:
            raise Fenced(why)

    async def _settle(self, msg: Delivery) -> tuple[Outcome, str]:
        verdict: BadChunk | None = None
        letter = _Letter()
        attempts = 0
        while True:
            self._fence(msg)
            try:
                if verdict is None:
                    end = await self.writer.end_of(msg.topic, msg.partition, msg.offset)
                    if end is not None and end.status == ChunkStatus.FAILED and not end.dead_lettered:
                        # The failed row was written, its dead letter never acknowledged (the worker
                        # that wrote it stopped or lost the partition): send it now, once.
                        log.warning("%s failed earlier (%s) and its dead letter was not sent: sending it",
                                    msg.source, end.error_reason)
                        verdict = BadChunk(_reason(end.error_reason), end.error_detail or "")
                        continue
                    if end is not None:
                        log.info("%s was settled already (%s by %s): a redelivery, nothing to do", msg.source,
                                 end.status, end.worker)
                        return Outcome(end.status), "redelivered"
                    if msg.unreadable is not None:
                        raise BadChunk("unreadable_batch", f"the consumer could not read the record batch at "
                                                           f"this offset: {msg.unreadable}")
                    try:
                        return await self._process(msg), ""
                    except (BadChunk, TransientFault, Fenced, AlreadySettled):
                        raise
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # a bug must cost one chunk, not the worker
                        log.exception("unexpected error on %s", msg.source)
                        raise BadChunk("processing_error", describe(exc)) from exc
                return await self._reject(msg, verdict, attempts + 1, letter), verdict.reason
            except AlreadySettled as settled:
                # Another attempt recorded this offset's end first (a worker that owned the partition
                # before or after this one): that end stands; read it on the next round.
                log.warning("%s: another attempt recorded its end first (%s); this one writes nothing",
                            msg.source, settled.status)
                verdict = None
            except BadChunk as bad:
                if verdict is None:
                    verdict = bad
                    continue
                # Settling it failed for good (even the reduced ledger row): back off, never drop it.
                attempts += 1
                log.error("cannot settle %s (attempt %d): %s", msg.source, attempts, bounded(str(bad), 300))
                await asyncio.sleep(self._backoff(attempts))
            except TransientFault as exc:
                attempts += 1
                self.metrics.retries.labels(exc.dependency).inc()
                if verdict is None and attempts >= self.max_attempts and await self._answers(exc.dependency):
                    verdict = BadChunk("retries_exhausted", f"{attempts} attempts while {exc.dependency} answered "
                                                            f"other requests; last: {bounded(str(exc), 400)}")
                    continue
                delay = self._backoff(attempts)
                log.warning("transient fault on %s (attempt %d, %s), retrying in %.1fs or when it answers: %s",
                            msg.source, attempts, exc.dependency, delay, bounded(str(exc), 300))
                await self._wait(msg, exc.dependency, delay)
            except (asyncio.CancelledError, Fenced):
                raise
            except Exception:  # a bug while dead-lettering: back off and try again, never drop
                attempts += 1
                log.exception("error while settling %s (attempt %d)", msg.source, attempts)
                await asyncio.sleep(self._backoff(attempts))

    def _backoff(self, attempts: int) -> float:
        """Capped exponential backoff before the next attempt (attempts counts failures so far)."""
        return min(self.retry_max_s, self.retry_initial_s * 2 ** min(attempts - 1, 30))

    async def _wait(self, msg: Delivery, dependency: Dependency, delay: float) -> None:
        """The backoff before the next attempt, stepped aside. When the dependency does not answer now,
        it is probed every `probe_s` and the wait ends as soon as it does: a restarted Triton or
        Postgres is used within a probe, not after a backoff of up to `retry_max_s`. When it answers
        now, the failure was not about availability and the backoff runs in full."""
        loop = asyncio.get_running_loop()
        async with msg.lease.step_aside():
            end = loop.time() + delay
            if dependency not in self.health or await self._answers(dependency):
                await asyncio.sleep(delay)
                return
            while (left := end - loop.time()) > 0:
                await asyncio.sleep(min(self.probe_s, left))
                if await self._answers(dependency):
                    return

    async def _answers(self, dependency: Dependency) -> bool:
        check = self.health.get(dependency)
        if check is None:
            return True
        try:
            return bool(await asyncio.wait_for(check(), timeout=10))
        except Exception:
            return False

    def _ledger(self, msg: Delivery, meta: ChunkMeta | None) -> LedgerEntry:
        ledger = LedgerEntry(topic=msg.topic, partition=msg.partition, offset=msg.offset, worker=WORKER_ID,
                             size_bytes=len(msg.value) if msg.value else 0)
        if meta is not None:
            ledger.update({"call_id": meta.call_id, "stream": meta.stream, "seq": meta.seq,
                           "end_of_call": meta.end_of_call, "start_ms": meta.start_ms,
                           "claim_check": meta.claim_check, "published_at": _published_at(meta, msg.timestamp)})
        return ledger

    async def _process(self, msg: Delivery) -> Outcome:
        meta = parse(msg.headers, msg.key)
        if "*" in await self.writer.erased_tracks(meta.call_id):
            # Erased by `callstream forget`: a replay must not bring the call back. The ledger keeps
            # only the message's place in the log and the call id (its tombstone's key); the payload
            # object is removed too.
            self._fence(msg)
            await self.writer.record_refused({**self._ledger(msg, None), "call_id": meta.call_id})
            await self._discard(meta)
            log.info("refused %s: its call was erased", msg.source)
            return Outcome.REFUSED
        try:
            pieces, t = await self.processor.process(meta, msg.value)
        except BadChunk as bad:
            if bad.reason == "claim_check_missing" and meta.claim_check:
                return await self._redelivered(msg, meta, bad)
            raise
        ledger = self._ledger(msg, meta)
        end_ms = max((p["end_ms"] for p in [*pieces, *t.talk]), default=meta.start_ms)
        cells = len({(p["participant_id"], p["cell_ms"]) for p in pieces})
        ledger.update({"status": ChunkStatus.DONE, "duration_ms": end_ms - meta.start_ms, "segments": cells,
                       "size_bytes": t.size_bytes, "fetch_ms": t.fetch_ms, "decode_ms": t.decode_ms,
                       "inference_ms": t.inference_ms, "error_reason": None, "error_detail": None,
                       "note": "; ".join(t.notes) or None})
        self._fence(msg)
        db_ms = await self.writer.commit_chunk(self._call(meta), pieces, ledger, t.utterances, t.heard, t.talk)
        self._observe(ledger.get("published_at"), t.fetch_ms, t.decode_ms, t.inference_ms, db_ms, cells)
        if self.publish_alerts is not None:
            await self._alerts(meta.call_id)
        await self._discard(meta)
        log.info("chunk %s/%s%d: %d segments (decode %.0f ms, inference %.0f ms, db %.0f ms)%s", meta.call_id,
                 f"{meta.stream}/" if meta.stream else "", meta.seq, cells, t.decode_ms, t.inference_ms, db_ms or 0,
                 f" [{ledger['note']}]" if t.notes else "")
        return Outcome.DONE

    async def _redelivered(self, msg: Delivery, meta: ChunkMeta, missing: BadChunk) -> Outcome:
        """A claim-check payload is deleted once its rows are committed, so a copy of that message (a
        redelivery after a crash between commit and offset commit, a second DLQ replay) finds it gone.
        That copy has nothing left to add: it is done, not a failure. Only a chunk never committed is
        really missing its payload."""
        first = await self.writer.committed_at(meta.call_id, meta.stream, meta.seq)
        if first is None:
            raise missing
        ledger = self._ledger(msg, meta)
        ledger.update({"status": ChunkStatus.DONE, "segments": 0, "error_reason": None, "error_detail": None,
                       "note": bounded(f"redelivered: rows already committed from {first}; payload consumed", 300)})
        self._fence(msg)
        await self.writer.record_redelivery(ledger)
        log.info("chunk %s/%s%d at %s was already committed from %s", meta.call_id,
                 f"{meta.stream}/" if meta.stream else "", meta.seq, msg.source, first)
        return Outcome.DONE

    def _observe(self, published_at: datetime | None, fetch_ms: float, decode_ms: float, inference_ms: float,
                 db_ms: float, cells: int) -> None:
        m = self.metrics
        for stage, ms in (("fetch", fetch_ms), ("decode", decode_ms), ("inference", inference_ms), ("db", db_ms)):
            if ms:
                m.stage.labels(stage).observe(ms / 1000)
        m.segments.inc(cells)
        if published_at is not None:
            m.publish_to_commit.observe(max(0.0, (datetime.now(UTC) - published_at).total_seconds()))

    async def _alerts(self, call_id: str) -> None:
        """Alerts the commit recorded go out now; one that cannot be published stays pending in the
        `alerts` table and the worker's sweep publishes it later (never lost, never a chunk's fault)."""
        assert self.publish_alerts is not None
        try:
            await self.publish_alerts(call_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("alerts of %s not published yet (the sweep retries): %s", bounded(call_id), exc)

    async def _discard(self, meta: ChunkMeta) -> None:
        """Media is kept no longer than needed; a failed delete is left to `retention apply`."""
        if meta.claim_check and self.discard_claim is not None:
            try:
                await self.discard_claim(meta.claim_check)
            except Exception as exc:
                log.warning("could not delete %s (tried again when the store answers; `retention apply` "
                            "deletes it otherwise): %s", bounded(meta.claim_check), exc)
                if self.leftover is not None:
                    self.leftover(meta.claim_check)

    def _call(self, meta: ChunkMeta) -> CallRow:
        # calls.last_seq is the whole-call stream's end; per-participant streams end in the ledger. A
        # whole-call chunk without a layout header is read with the default layout: record which.
        whole_call = not meta.participant_id and not meta.audio_channels
        return CallRow(call_id=meta.call_id, started_at=meta.call_started_at,
                       layout=meta.layout or (self.default_layout if whole_call else None),
                       last_seq=meta.seq if meta.end_of_call and not meta.stream else None)

    async def _reject(self, msg: Delivery, bad: BadChunk, attempts: int, letter: _Letter) -> Outcome:
        """The failed row first, written only while no other end stands and the lease holds; then the
        dead letter; then the row is marked sent. A stop between the row and the dead letter leaves a
        row marked unsent, and whoever processes the offset next sends it (`_settle`): never lost,
        and never for a chunk that is done. `letter` remembers across retries what was done already."""
        try:
            meta: ChunkMeta | None = parse(msg.headers, msg.key)
        except Exception:  # BadChunk, or anything else: the dead letter needs no parsed headers
            meta = None
        if not letter.recorded:
            self._fence(msg)
            ledger = self._ledger(msg, meta)
            if meta is None and (call_id := call_id_of(msg.headers, msg.key)) is not None:
                ledger["call_id"] = call_id   # a bad header elsewhere: still this call's dead letter
            ledger.update({"status": ChunkStatus.FAILED, "error_reason": bad.reason,
                           "error_detail": bounded(bad.detail, 2000), "dead_lettered_at": None})
            try:
                recorded = await self.writer.record_failure(self._call(meta) if meta else None, ledger)
            except BadChunk as exc:  # the header-derived fields were refused: keep the ledger row anyway
                log.warning("ledger row of %s refused (%s); recording it without call fields", msg.source, exc)
                for field in ("call_id", "stream", "seq", "end_of_call", "start_ms", "claim_check", "published_at"):
                    ledger.pop(field, None)  # type: ignore[misc]
                recorded = await self.writer.record_failure(None, ledger)
            if not recorded:
                done = await self.writer.done_at(msg.topic, msg.partition, msg.offset)
                if done is None:
                    raise AlreadySettled("failed or refused")
                log.warning("%s failed (%s) after %s had settled it: kept done, no dead letter", msg.source,
                            bad.reason, done)
                return Outcome.DONE
            letter.recorded = True
        if not letter.sent:
            self._fence(msg)   # the partition's next owner sends it otherwise: the row says it is due
            log.warning("dead-lettering %s: %s", msg.source, bounded(str(bad), 300))
            extra = dead_letter_headers(bad.reason, bad.detail, msg.source, attempts)
            # b"" for no value: a record needs a key or a value, and a keyless null (a stray tombstone, an
            # offset the consumer could not read) has neither.
            value, where = msg.value or b"", "inline" if msg.value else "none"
            if value and len(value) > self.dlq_inline_limit:
                value, where = b"", await self._park(msg, value)
            original = raw_headers(msg.headers)
            try:
                await self._send(msg.key, value, original + extra + [(H_DLQ_PAYLOAD, where.encode())])
            except DeadLetterRejected as exc:
                # Still reach the DLQ: without the original headers and payload, pointing at the source offset.
                log.warning("dead letter of %s refused (%s); sending a reference instead", msg.source, exc)
                await self._send(None, b"", extra + [(H_DLQ_PAYLOAD, f"omitted; see {msg.source}".encode())])
            letter.sent = True
            self.metrics.dead_letters.labels(bad.reason).inc()
        await self.writer.mark_dead_lettered(msg.topic, msg.partition, msg.offset)
        return Outcome.FAILED

    async def _park(self, msg: Delivery, value: bytes) -> str:
        if self.park_payload is None:
            return f"omitted (too large for the DLQ); see {msg.source}"
        try:
            return str(await self.park_payload(msg.source, value))
        except BadChunk as exc:
            return f"omitted ({exc.reason}); see {msg.source}"

    async def _send(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        try:
            await self.dead_letter(key, value, headers)
        except (DeadLetterRejected, asyncio.CancelledError):
            raise
        except Exception as exc:
            if permanent_kafka_error(exc):
                raise DeadLetterRejected(describe(exc)) from exc
            raise TransientFault(f"dead-letter topic unavailable: {describe(exc)}", "dead_letter_topic") from exc
