"""Per-message policy: process, commit, and only then let the offset advance.

Bad chunks go to the dead-letter topic with their reason and get a `failed` ledger row; transient
faults are retried with capped exponential backoff for as long as it takes, holding the offset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from pipeline.contract import H_DLQ_DETAIL, H_DLQ_REASON, ChunkMeta, header_map, parse
from pipeline.errors import BadChunk, TransientFault
from pipeline.store.writer import SegmentWriter
from pipeline.worker.process import ChunkProcessor

log = logging.getLogger("callstream.worker")
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

DeadLetter = Callable[[bytes | None, bytes | None, list[tuple[str, bytes]]], Awaitable[None]]


def _published_at(meta: ChunkMeta | None) -> datetime | None:
    if meta and meta.published_at_ms:
        return datetime.fromtimestamp(meta.published_at_ms / 1000, timezone.utc)
    return None


class MessageHandler:
    def __init__(self, processor: ChunkProcessor, writer: SegmentWriter, dead_letter: DeadLetter,
                 retry_initial_s: float = 0.5, retry_max_s: float = 30.0) -> None:
        self.processor, self.writer, self.dead_letter = processor, writer, dead_letter
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s

    async def handle(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     headers: Any) -> str:
        attempt = 0
        while True:
            try:
                return await self._once(topic, partition, offset, key, value, headers)
            except TransientFault as exc:
                delay = min(self.retry_max_s, self.retry_initial_s * 2 ** attempt)
                attempt += 1
                log.warning("transient fault on %s[%d]@%d (attempt %d), retrying in %.1fs: %s",
                            topic, partition, offset, attempt, delay, exc)
                await asyncio.sleep(delay)

    async def _once(self, topic, partition, offset, key, value, headers) -> str:
        ledger: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset, "worker": WORKER_ID,
                                  "size_bytes": len(value) if value else 0}
        meta: ChunkMeta | None = None
        try:
            meta = parse(headers, key)
            ledger.update(call_id=meta.call_id, seq=meta.seq, start_ms=meta.start_ms,
                          claim_check=meta.claim_check, published_at=_published_at(meta))
            rows, t = await self.processor.process(meta, value)
        except BadChunk as bad:
            await self._reject(bad, meta, ledger, key, value, headers)
            return "failed"
        except TransientFault:
            raise
        except Exception as exc:  # a bug must cost one chunk, not the worker
            log.exception("unexpected error on %s[%d]@%d", topic, partition, offset)
            bad = BadChunk("processing_error", "".join(traceback.format_exception_only(exc)).strip()[:500])
            await self._reject(bad, meta, ledger, key, value, headers)
            return "failed"
        ledger.update(status="done", duration_ms=max((r["end_ms"] for r in rows), default=meta.start_ms) - meta.start_ms,
                      segments=len(rows), size_bytes=t.size_bytes, fetch_ms=t.fetch_ms, decode_ms=t.decode_ms,
                      inference_ms=t.inference_ms, error_reason=None, error_detail=None)
        await self.writer.commit_chunk(self._call(meta), rows, ledger)
        log.info("chunk %s/%d: %d segments (decode %.0f ms, inference %.0f ms, db %.0f ms)", meta.call_id,
                 meta.seq, len(rows), t.decode_ms, t.inference_ms, ledger["db_ms"])
        return "done"

    @staticmethod
    def _call(meta: ChunkMeta) -> dict[str, Any]:
        return {"call_id": meta.call_id, "started_at": meta.call_started_at, "layout": meta.layout,
                "last_seq": meta.seq if meta.end_of_call else None}

    async def _reject(self, bad: BadChunk, meta, ledger, key, value, headers) -> None:
        log.warning("dead-lettering %s[%d]@%d: %s", ledger["topic"], ledger["partition"], ledger["offset"], bad)
        try:
            original = [(k, v.encode()) for k, v in header_map(headers).items()]
        except BadChunk:
            original = []
        extra = [(H_DLQ_REASON, bad.reason.encode()), (H_DLQ_DETAIL, bad.detail[:1000].encode()),
                 ("dlq-source", f"{ledger['topic']}/{ledger['partition']}/{ledger['offset']}".encode())]
        try:
            await self.dead_letter(key, value, [h for h in original if not h[0].startswith("dlq-")] + extra)
        except Exception as exc:
            raise TransientFault(f"dead-letter topic unavailable: {exc}") from exc
        ledger.update(status="failed", error_reason=bad.reason, error_detail=bad.detail[:2000])
        await self.writer.record_failure(self._call(meta) if meta else None, ledger)
