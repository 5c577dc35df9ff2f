"""Idempotent writes: one transaction per chunk holds its segments, its call row and its ledger row.

Segments upsert on (call, track, start, model version) and the ledger upserts on the message's
(topic, partition, offset), so a redelivered or republished chunk rewrites the same rows. The worker
acknowledges the message only after this transaction commits.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, OperationalError

from pipeline.errors import TransientFault
from pipeline.store.models import Call, ChunkLedger, EmotionSegment

SEGMENT_KEY = ["call_id", "track", "start_ms", "model_version"]
LEDGER_KEY = ["topic", "partition", "offset"]


def _upsert(model, rows: list[dict[str, Any]], keys: list[str], extra: dict | None = None):
    stmt = insert(model).values(rows)
    update = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    update.update(extra or {})
    return stmt.on_conflict_do_update(index_elements=keys, set_=update)


def _call_upsert(call: dict[str, Any]):
    stmt = insert(Call).values(**call)
    # Keep the first known start time and layout; remember the end-of-call seq once any chunk says so.
    return stmt.on_conflict_do_update(index_elements=["call_id"], set_={
        "started_at": func.coalesce(Call.started_at, stmt.excluded.started_at),
        "layout": func.coalesce(Call.layout, stmt.excluded.layout),
        "last_seq": func.coalesce(stmt.excluded.last_seq, Call.last_seq),
        "updated_at": func.now(),
    })


def _ledger_upsert(ledger: dict[str, Any]):
    # clock_timestamp(), not now(): now() is the transaction's start, and latency is measured to the end.
    row = {**ledger, "processed_at": func.clock_timestamp()}
    return _upsert(ChunkLedger, [row], LEDGER_KEY, {"attempts": ChunkLedger.attempts + 1})


class SegmentWriter:
    def __init__(self, engine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def _transaction(self):
        """One transaction; a lost or unreachable server is transient (retry), anything else is raised."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except DBAPIError as exc:
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise TransientFault(f"Postgres unavailable: {exc.orig or exc}") from exc
            raise

    async def commit_chunk(self, call: dict[str, Any], segments: list[dict[str, Any]],
                           ledger: dict[str, Any]) -> None:
        async with self._transaction() as conn:
            start = time.perf_counter()
            await conn.execute(_call_upsert(call))
            if segments:
                # Sorted keys: concurrent chunks of one call lock rows in the same order (no deadlock).
                segments = sorted(segments, key=lambda r: (r["track"], r["start_ms"]))
                await conn.execute(_upsert(EmotionSegment, segments, SEGMENT_KEY, {"updated_at": func.now()}))
            ledger["db_ms"] = (time.perf_counter() - start) * 1000
            await conn.execute(_ledger_upsert(ledger))

    async def record_failure(self, call: dict[str, Any] | None, ledger: dict[str, Any]) -> None:
        async with self._transaction() as conn:
            if call:
                await conn.execute(_call_upsert(call))
            await conn.execute(_ledger_upsert(ledger))
