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
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiokafka.errors as aiokafka_errors
import kafka.errors as kafka_errors

from pipeline.contract import H_DLQ_DETAIL, H_DLQ_REASON, ChunkMeta, bounded, parse
from pipeline.errors import BadChunk, Dependency, TransientFault
from pipeline.store.models import CallRow, ChunkStatus, LedgerEntry
from pipeline.worker.metrics import Metrics

log = logging.getLogger("callstream.worker")
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

H_DLQ_SOURCE = "dlq-source"
H_DLQ_ATTEMPTS = "dlq-attempts"
H_DLQ_PAYLOAD = "dlq-payload"

Headers = list[tuple[str, bytes]]
DeadLetter = Callable[[bytes | None, bytes | None, Headers], Awaitable[None]]
Health = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any
    timestamp: float | None = None   # the record's Kafka timestamp (s): when the broker got it, for any client

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class DeadLetterRejected(Exception):
    """The dead-letter topic refused this record itself (too large, invalid): send a smaller one."""


def _published_at(meta: ChunkMeta | None, timestamp: float | None = None) -> datetime | None:
    """When the chunk was published: the recorder's `published-at-ms` header, else the record's Kafka
    timestamp (every client sets one), so latency is measured for clients that do not set the header."""
    if meta and meta.published_at_ms:
        return datetime.fromtimestamp(meta.published_at_ms / 1000, UTC)
    if timestamp and timestamp > 0:
        return datetime.fromtimestamp(timestamp, UTC)
    return None


def raw_headers(headers: Any) -> Headers:
    """The message's own headers as sent (even malformed ones), for the dead letter; ours removed."""
    out: Headers = []
    try:
        items = headers.items() if isinstance(headers, Mapping) else list(headers or [])
        for k, v in items:
            name = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
            if not name.lower().startswith("dlq-"):
                out.append((name, v if isinstance(v, bytes) else str(v if v is not None else "").encode()))
    except Exception:  # headers that cannot even be iterated are dropped, not fatal
        return []
    return out


class MessageHandler:
    def __init__(self, processor: Any, writer: Any, dead_letter: DeadLetter, *,
                 health: Mapping[Dependency, Health] | None = None, park_payload: Any = None,
                 retry_initial_s: float = 0.5, retry_max_s: float = 30.0, max_attempts: int = 6,
                 dlq_inline_limit: int = 900_000, discard_claim: Any = None, metrics: Metrics | None = None,
                 publish_alerts: Callable[[str], Awaitable[None]] | None = None) -> None:
        """`park_payload(source, payload) -> uri` keeps a payload too large for the DLQ (claim check);
        `discard_claim(uri)` deletes a claim-check object once the chunk's rows are committed;
        `publish_alerts(call_id)` publishes the call's alerts its commit recorded."""
        self.metrics = metrics or Metrics()
        self.publish_alerts = publish_alerts
        self.discard_claim = discard_claim
        self.processor, self.writer, self.dead_letter = processor, writer, dead_letter
        self.health = dict(health or {})
        self.park_payload = park_payload
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.max_attempts, self.dlq_inline_limit = max_attempts, dlq_inline_limit

    async def handle(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     headers: Any, timestamp: float | None = None) -> str:
        """Returns 'done', 'failed' or 'erased' once the message's end is committed; retries until then."""
        self.metrics.in_flight.inc()
        try:
            outcome, reason = await self._settle(Message(topic, partition, offset, key, value, headers, timestamp))
        finally:
            self.metrics.in_flight.dec()
        self.metrics.chunks.labels(outcome, reason).inc()
        return outcome

    async def _settle(self, msg: Message) -> tuple[str, str]:
        verdict: BadChunk | None = None
        attempts = 0
        while True:
            try:
                if verdict is None:
                    try:
                        return await self._process(msg), ""
                    except (BadChunk, TransientFault):
                        raise
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # a bug must cost one chunk, not the worker
                        log.exception("unexpected error on %s", msg.source)
                        raise BadChunk("processing_error", _describe(exc)) from exc
                return await self._reject(msg, verdict, attempts + 1), verdict.reason
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
                log.warning("transient fault on %s (attempt %d, %s), retrying in %.1fs: %s", msg.source, attempts,
                            exc.dependency, delay, bounded(str(exc), 300))
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug while dead-lettering: back off and try again, never drop
                attempts += 1
                log.exception("error while settling %s (attempt %d)", msg.source, attempts)
                await asyncio.sleep(self._backoff(attempts))

    def _backoff(self, attempts: int) -> float:
        """Capped exponential backoff before the next attempt (attempts counts failures so far)."""
        return min(self.retry_max_s, self.retry_initial_s * 2 ** min(attempts - 1, 30))

    async def _answers(self, dependency: Dependency) -> bool:
        check = self.health.get(dependency)
        if check is None:
            return True
        try:
            return bool(await asyncio.wait_for(check(), timeout=10))
        except Exception:
            return False

    def _ledger(self, msg: Message, meta: ChunkMeta | None) -> LedgerEntry:
        ledger = LedgerEntry(topic=msg.topic, partition=msg.partition, offset=msg.offset, worker=WORKER_ID,
                             size_bytes=len(msg.value) if msg.value else 0)
        if meta is not None:
            ledger.update({"call_id": meta.call_id, "stream": meta.stream, "seq": meta.seq,
                           "end_of_call": meta.end_of_call, "start_ms": meta.start_ms,
                           "claim_check": meta.claim_check, "published_at": _published_at(meta, msg.timestamp)})
        return ledger

    async def _process(self, msg: Message) -> str:
        meta = parse(msg.headers, msg.key)
        if "*" in await self.writer.erased_tracks(meta.call_id):
            # Erased by `callstream forget`: a replay must not bring the call back. The ledger keeps
            # only the message's place in the log; the payload object is removed too.
            await self.writer.record_refused(self._ledger(msg, None))
            await self._discard(meta)
            log.info("refused %s: its call was erased", msg.source)
            return "erased"
        try:
            pieces, t = await self.processor.process(meta, msg.value)
        except BadChunk as bad:
            if bad.reason == "claim_check_missing" and meta.claim_check:
                return await self._redelivered(msg, meta, bad)
            raise
        ledger = self._ledger(msg, meta)
        end_ms = max((p["end_ms"] for p in pieces), default=meta.start_ms)
        cells = len({(p["participant_id"], p["cell_ms"]) for p in pieces})
        ledger.update({"status": ChunkStatus.DONE, "duration_ms": end_ms - meta.start_ms, "segments": cells,
                       "size_bytes": t.size_bytes, "fetch_ms": t.fetch_ms, "decode_ms": t.decode_ms,
                       "inference_ms": t.inference_ms, "error_reason": None, "error_detail": None,
                       "note": "; ".join(t.notes) or None})
        db_ms = await self.writer.commit_chunk(self._call(meta), pieces, ledger)
        self._observe(ledger.get("published_at"), t.fetch_ms, t.decode_ms, t.inference_ms, db_ms, cells)
        if self.publish_alerts is not None:
            await self._alerts(meta.call_id)
        await self._discard(meta)
        log.info("chunk %s/%s%d: %d segments (decode %.0f ms, inference %.0f ms, db %.0f ms)%s", meta.call_id,
                 f"{meta.stream}/" if meta.stream else "", meta.seq, cells, t.decode_ms, t.inference_ms, db_ms or 0,
                 f" [{ledger['note']}]" if t.notes else "")
        return "done"

    async def _redelivered(self, msg: Message, meta: ChunkMeta, missing: BadChunk) -> str:
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
        await self.writer.record_redelivery(ledger)
        log.info("chunk %s/%s%d at %s was already committed from %s", meta.call_id,
                 f"{meta.stream}/" if meta.stream else "", meta.seq, msg.source, first)
        return "done"

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
                log.warning("could not delete %s (retention apply will): %s", bounded(meta.claim_check), exc)

    @staticmethod
    def _call(meta: ChunkMeta) -> CallRow:
        # calls.last_seq is the whole-call stream's end; per-participant streams end in the ledger.
        return CallRow(call_id=meta.call_id, started_at=meta.call_started_at, layout=meta.layout,
                       last_seq=meta.seq if meta.end_of_call and not meta.stream else None)

    async def _reject(self, msg: Message, bad: BadChunk, attempts: int) -> str:
        log.warning("dead-lettering %s: %s", msg.source, bounded(str(bad), 300))
        try:
            meta: ChunkMeta | None = parse(msg.headers, msg.key)
        except Exception:  # BadChunk, or anything else: the dead letter needs no parsed headers
            meta = None
        extra = [(H_DLQ_REASON, bad.reason.encode()), (H_DLQ_DETAIL, bounded(bad.detail, 1000).encode()),
                 (H_DLQ_SOURCE, msg.source.encode()), (H_DLQ_ATTEMPTS, str(attempts).encode())]
        value, where = msg.value, "inline" if msg.value else "none"
        if value and len(value) > self.dlq_inline_limit:
            value, where = b"", await self._park(msg, value)
        original = raw_headers(msg.headers)
        try:
            await self._send(msg.key, value, original + extra + [(H_DLQ_PAYLOAD, where.encode())])
        except DeadLetterRejected as exc:
            # Still reach the DLQ: without the original headers and payload, pointing at the source offset.
            log.warning("dead letter of %s refused (%s); sending a reference instead", msg.source, exc)
            await self._send(None, b"", extra + [(H_DLQ_PAYLOAD, f"omitted; see {msg.source}".encode())])
        self.metrics.dead_letters.labels(bad.reason).inc()
        ledger = self._ledger(msg, meta)
        ledger.update({"status": ChunkStatus.FAILED, "error_reason": bad.reason,
                       "error_detail": bounded(bad.detail, 2000)})
        try:
            await self.writer.record_failure(self._call(meta) if meta else None, ledger)
        except BadChunk as exc:  # the header-derived fields were refused: keep the ledger row anyway
            log.warning("ledger row of %s refused (%s); recording it without call fields", msg.source, exc)
            for field in ("call_id", "stream", "seq", "end_of_call", "start_ms", "claim_check", "published_at"):
                ledger.pop(field, None)  # type: ignore[misc]
            await self.writer.record_failure(None, ledger)
        return "failed"

    async def _park(self, msg: Message, value: bytes) -> str:
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
            if _permanent_kafka_error(exc):
                raise DeadLetterRejected(_describe(exc)) from exc
            raise TransientFault(f"dead-letter topic unavailable: {_describe(exc)}", "dead_letter_topic") from exc


# Records the broker will never accept, whatever the retry: by the clients' own types (aiokafka for
# the worker's producer, kafka-python for the CLI's), not by class names.
NEVER_ACCEPTED: tuple[type[BaseException], ...] = (
    aiokafka_errors.MessageSizeTooLargeError, aiokafka_errors.RecordTooLargeError,
    aiokafka_errors.CorruptRecordException, aiokafka_errors.RecordListTooLargeError,
    aiokafka_errors.UnsupportedForMessageFormatError, kafka_errors.MessageSizeTooLargeError,
    kafka_errors.InvalidRecordError, kafka_errors.CorruptRecordError, kafka_errors.RecordListTooLargeError,
    kafka_errors.UnsupportedForMessageFormatError)


def _permanent_kafka_error(exc: BaseException) -> bool:
    """Kafka errors are marked retriable or not; a record too large or invalid will never be accepted."""
    if isinstance(exc, NEVER_ACCEPTED):
        return True
    return isinstance(exc, aiokafka_errors.KafkaError | kafka_errors.KafkaError) and not exc.retriable \
        and getattr(exc, "errno", None) not in (None, -1)


def _describe(exc: BaseException) -> str:
    return bounded("".join(traceback.format_exception_only(exc)).strip(), 500)
