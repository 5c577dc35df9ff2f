"""Idempotent writes: one transaction per chunk holds its pieces, the rows they change, its call row and
its ledger row.

A chunk's pieces upsert on (call, participant, model version, cell, stream, seq); the rows of the grid
cells they touch are then rebuilt from *all* pieces of those cells (store/timeline.py), and the ledger
upserts on the message's (topic, partition, offset). So a redelivered, republished or out-of-order chunk
gives the same rows. Chunks of one call commit one at a time (a transaction-scoped advisory lock on the
call), so two chunks sharing a cell always see each other's pieces. The worker acknowledges the
message only after this transaction commits.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete as sa_delete
from sqlalchemy import func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.alerts.rules import PhraseRule, Rule, evaluate
from pipeline.alerts.rules import heard as phrase_heard
from pipeline.contract import AlertMessage
from pipeline.errors import AlreadySettled, BadChunk, TransientFault
from pipeline.shared.fusion import DEFAULT_FUSION, FusionParams
from pipeline.store.models import (
    REFUSED_ERASED,
    Call,
    CallRow,
    ChunkLedger,
    ChunkPiece,
    ChunkStatus,
    EmotionSegment,
    Heard,
    LedgerEnd,
    LedgerEntry,
    PieceRow,
    SegmentPiece,
    SegmentRow,
    SpeechActivity,
    TalkRow,
    Utterance,
    UtteranceRow,
)
from pipeline.store.timeline import cell_rows, gap_cells, gap_row

SEGMENT_KEY = ["call_id", "participant_id", "start_ms", "model_version"]
PIECE_KEY = ["call_id", "participant_id", "model_version", "cell_ms", "stream", "seq"]
CALL_LOCK = 0x63616C6D  # advisory lock namespace: one chunk of a call commits at a time
LEDGER_KEY = ["topic", "partition", "offset"]
CHUNK_PIECE_KEY = ["call_id", "participant_id", "stream", "seq", "start_ms"]   # models.ChunkPiece's key
# The driver sends at most 65,535 bind parameters per statement; stay well below it.
MAX_PARAMS = 30_000


def _upsert(model: Any, row: Mapping[str, Any], keys: list[str], extra: dict[str, Any] | None = None) -> Any:
    # One row as keyword values: SQLAlchemy caches that form's compiled SQL (a list of rows it
    # compiles again on every call).
    stmt = insert(model).values(**row)
    update = {c: stmt.excluded[c] for c in row if c not in keys}
    update.update(extra or {})
    return stmt.on_conflict_do_update(index_elements=keys, set_=update)


@functools.lru_cache(maxsize=64)
def _many_upsert(model: Any, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    """One statement for any number of rows, executed as executemany: SQLAlchemy caches its compiled
    form and sends the rows in "insertmanyvalues" batches, so a 45-minute chunk's thousands of rows
    neither rebuild a huge statement on the event loop nor exceed the driver's parameter limit. Built
    once per column set, not per chunk (0.2 ms of the event loop's time each)."""
    stmt = insert(model)
    update: dict[str, Any] = {c: stmt.excluded[c] for c in columns if c not in keys}
    update["updated_at"] = func.now()
    return stmt.on_conflict_do_update(index_elements=keys, set_=update)


async def _write_many(conn: AsyncConnection, model: Any, keys: list[str], rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    # Sorted keys: any two writers lock rows in the same order (no deadlock).
    rows = sorted(rows, key=lambda r: tuple(r[k] for k in keys))
    stmt = _many_upsert(model, tuple(keys), tuple(sorted(rows[0])))
    batch = max(1, MAX_PARAMS // len(rows[0]))
    for i in range(0, len(rows), batch):
        await conn.execute(stmt, rows[i:i + batch])


_NEIGHBOURS = text("""
SELECT max(cell_ms) FILTER (WHERE cell_ms < :lo) AS below, min(cell_ms) FILTER (WHERE cell_ms > :hi) AS above,
       max(cell_ms) AS last
FROM segment_pieces WHERE call_id = :c AND participant_id = :p AND model_version = :v""")
_CELL_PIECES = text("""
SELECT * FROM segment_pieces
WHERE call_id = :c AND participant_id = :p AND model_version = :v AND cell_ms = ANY(:cells)""")


def _call_upsert(call: CallRow) -> Any:
    stmt = insert(Call).values(**call)
    # Keep the first known start time and layout; remember the end-of-call seq once any chunk says so.
    return stmt.on_conflict_do_update(index_elements=["call_id"], set_={
        "started_at": func.coalesce(Call.started_at, stmt.excluded.started_at),
        "layout": func.coalesce(Call.layout, stmt.excluded.layout),
        # Two chunks both marked end-of-call: the later seq is the end (GREATEST ignores NULLs).
        "last_seq": func.greatest(stmt.excluded.last_seq, Call.last_seq),
        "updated_at": func.now(),
    })


def _ledger_upsert(ledger: LedgerEntry) -> Any:
    """The message's end. The first end recorded at an offset stands: a row is rewritten only by the
    same end (a redelivery counts one more attempt), so a done chunk never becomes failed and a failed
    one (its dead letter sent or due) never becomes done. No row changed means another end stood."""
    # clock_timestamp(), not now(): now() is the transaction's start, and latency is measured to the end.
    row = {**ledger, "processed_at": func.clock_timestamp()}
    stmt = insert(ChunkLedger).values(**row)
    update: dict[str, Any] = {c: stmt.excluded[c] for c in row if c not in LEDGER_KEY}
    update["attempts"] = ChunkLedger.attempts + 1
    return stmt.on_conflict_do_update(index_elements=LEDGER_KEY, set_=update,
                                      where=ChunkLedger.status == stmt.excluded.status)


async def _end(conn: AsyncConnection, ledger: LedgerEntry) -> None:
    """Write the ledger row, or raise AlreadySettled (rolling back the transaction) when another end
    stands at the offset."""
    if not (await conn.execute(_ledger_upsert(ledger))).rowcount:
        status = (await conn.execute(_END_OF, {"t": ledger["topic"], "p": ledger["partition"],
                                               "o": ledger["offset"]})).first()
        raise AlreadySettled(status[0] if status else "settled")


def _refused(ledger: LedgerEntry) -> LedgerEntry:
    """A ledger entry reduced to the message's place in the log and the call id, which the erasure's
    tombstone keeps anyway: nothing else of an erased call stays, and `timeline` / `status` can say
    that a replay was refused instead of showing nothing."""
    refused = LedgerEntry(topic=ledger["topic"], partition=ledger["partition"], offset=ledger["offset"],
                          worker=ledger.get("worker", ""), size_bytes=ledger.get("size_bytes", 0),
                          status=ChunkStatus.REFUSED, segments=0, error_reason=REFUSED_ERASED,
                          note="refused: the call was erased (callstream forget)")
    if "call_id" in ledger:
        refused["call_id"] = ledger["call_id"]
    return refused


_WINDOW_ROWS = text("""
SELECT start_ms, end_ms, label, arousal, speech_found FROM emotion_segments
WHERE call_id = :c AND participant_id = :p AND model_version = :v AND start_ms BETWEEN :a AND :b
ORDER BY start_ms""")
_FIRE = text("""
INSERT INTO alerts (call_id, rule, participant_id, role, window_start_ms, window_end_ms, details, model_version)
VALUES (:c, :rule, :p, :role, :a, :b, CAST(:details AS jsonb), :v) ON CONFLICT (call_id, rule) DO NOTHING""")
_PENDING = text("""
SELECT id, call_id, rule, participant_id, role, window_start_ms, window_end_ms, details, model_version, fired_at
FROM alerts WHERE published_at IS NULL AND (CAST(:c AS varchar) IS NULL OR call_id = :c)
ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED""")

_END_OF = text("""
SELECT status, dead_lettered_at IS NOT NULL, error_reason, error_detail, worker FROM chunks
WHERE topic = :t AND partition = :p AND "offset" = :o""")
_DEAD_LETTERED = text("""
UPDATE chunks SET dead_lettered_at = coalesce(dead_lettered_at, clock_timestamp())
WHERE topic = :t AND partition = :p AND "offset" = :o AND status = 'failed'""")
_DONE_AT = text("""
SELECT worker FROM chunks WHERE topic = :t AND partition = :p AND "offset" = :o AND status = 'done'""")
_LATE = text("""
UPDATE chunks SET note = left(concat_ws('; ', note, CAST(:n AS text)), 2000), attempts = attempts + 1
WHERE topic = :t AND partition = :p AND "offset" = :o""")

AlertSend = Callable[[bytes, bytes], Awaitable[None]]


class SegmentWriter:
    def __init__(self, engine: AsyncEngine, segment_ms: int = 1000,
                 fusion: FusionParams | Mapping[str, FusionParams] = DEFAULT_FUSION,
                 rules: Sequence[Rule] = ()) -> None:
        """`fusion`: how each model version's rows are fused (by model_version; one value for all)."""
        self.engine, self.segment_ms = engine, segment_ms
        self.fusion = fusion
        self.rules = list(rules)

    def fusion_of(self, version: str) -> FusionParams:
        if isinstance(self.fusion, FusionParams):
            return self.fusion
        return self.fusion.get(version, DEFAULT_FUSION)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction. Faults are classified by what Postgres said: a server that cannot be reached,
        a dropped connection, a deadlock or serialization failure is transient; data, integrity and
        programming errors will fail the same way every time, so they are the chunk's (db_rejected)."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except DBAPIError as exc:
            if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
                raise TransientFault(f"Postgres unavailable: {exc.orig or exc}", "postgres") from exc
            raise BadChunk("db_rejected", f"{type(exc.orig or exc).__name__}: {str(exc.orig or exc)[:400]}") from exc
        except (PoolTimeout, OSError) as exc:
            raise TransientFault(f"Postgres unavailable: {exc}", "postgres") from exc

    async def ping(self) -> bool:
        """Whether Postgres answers now: tells a dependency that is down from a message that keeps failing."""
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    async def register_models(self, primary: tuple[str, str], shadow: tuple[str, str] | None = None) -> None:
        """Record which model versions this worker writes for, (version, name) each: the analyst views
        read the primary's rows. The last worker to start decides (a rollout switches it)."""
        async with self._transaction() as conn:
            for (version, name), role in ((primary, "primary"), *(((shadow, "shadow"),) if shadow else ())):
                if role == "primary":   # one primary: the one before becomes a version like any other
                    await conn.execute(text("UPDATE served_models SET role = 'other' WHERE role = 'primary' "
                                            "AND model_version <> :v"), {"v": version})
                await conn.execute(text("""
                    INSERT INTO served_models (model_version, model_name, role) VALUES (:v, :n, :r)
                    ON CONFLICT (model_version) DO UPDATE SET role = excluded.role, model_name = excluded.model_name,
                        last_seen_at = now()"""), {"v": version, "n": name, "r": role})

    async def erased_tracks(self, call_id: str) -> set[str]:
        """Tracks of the call erased by `callstream forget` ('*' = the whole call)."""
        async with self._transaction() as conn:
            rows = await conn.execute(text("SELECT track FROM erasures WHERE call_id = :c"), {"c": call_id})
            return {r[0] for r in rows}

    async def record_refused(self, ledger: LedgerEntry) -> None:
        """The ledger row of a chunk of an erased call: its place in the log only, nothing of the call."""
        async with self._transaction() as conn:
            await conn.execute(_ledger_upsert(_refused(ledger)))

    async def committed_at(self, call_id: str, stream: str, seq: int) -> str | None:
        """Where (topic/partition/offset) this chunk's rows were already committed from, if they were."""
        async with self._transaction() as conn:
            row = (await conn.execute(text(
                "SELECT topic, partition, \"offset\" FROM chunks WHERE call_id = :c AND stream = :s AND seq = :q "
                "AND status = 'done' ORDER BY processed_at LIMIT 1"),
                {"c": call_id, "s": stream, "q": seq})).first()
            return f"{row[0]}/{row[1]}/{row[2]}" if row else None

    async def record_redelivery(self, ledger: LedgerEntry) -> None:
        """The ledger row of a copy of a chunk whose rows are already committed: done, adding nothing."""
        async with self._transaction() as conn:
            await _end(conn, ledger)

    async def commit_chunk(self, call: CallRow, pieces: list[PieceRow], ledger: LedgerEntry,
                           utterances: Sequence[UtteranceRow] = (), heard: Sequence[Heard] = (),
                           talk: Sequence[TalkRow] = ()) -> float:
        """Write the chunk's pieces, the rows of the cells they touch, its utterances, the talk measured of
        participants not analysed, its call and ledger rows in one transaction; returns the ms it took."""
        async with self._transaction() as conn:
            start = time.perf_counter()
            await conn.execute(text("SELECT pg_advisory_xact_lock(:ns, hashtext(:c))"),
                               {"ns": CALL_LOCK, "c": call["call_id"]})
            # A participant erased from this call stays erased, whatever is replayed.
            gone = {r[0] for r in await conn.execute(text("SELECT track FROM erasures WHERE call_id = :c"),
                                                      {"c": call["call_id"]})}
            if "*" in gone:  # erased while this chunk was in flight: nothing of the call is written
                await _end(conn, _refused(ledger))
                return 0.0
            pieces = [p for p in pieces if p["participant_id"] not in gone]
            await conn.execute(_call_upsert(call))
            await _write_many(conn, SegmentPiece, PIECE_KEY, pieces)
            for model, rows in ((Utterance, utterances), (SpeechActivity, talk)):
                await self._replace(conn, model, call["call_id"], ledger,
                                    [r for r in rows if r["participant_id"] not in gone])
            await _write_many(conn, EmotionSegment, SEGMENT_KEY, await self._rows(conn, pieces, ledger.get("seq", 0)))
            if self.rules:
                await self._evaluate(conn, pieces)
                await self._phrases(conn, call["call_id"], [h for h in heard if h.participant_id not in gone])
            db_ms = (time.perf_counter() - start) * 1000
            await _end(conn, {**ledger, "db_ms": db_ms})
        return db_ms

    @staticmethod
    async def _replace(conn: AsyncConnection, model: type[ChunkPiece], call_id: str, ledger: LedgerEntry,
                       rows: Sequence[Mapping[str, Any]]) -> None:
        """The chunk's own pieces (utterances, measured talk) replace whatever an earlier delivery of it
        stored: a redelivery heard by another model version, or with the setting since switched off, leaves
        no stale rows."""
        if "seq" in ledger:
            await conn.execute(sa_delete(model).where(model.call_id == call_id,
                                                      model.stream == ledger.get("stream", ""),
                                                      model.seq == ledger["seq"]))
        await _write_many(conn, model, CHUNK_PIECE_KEY, rows)

    async def _rows(self, conn: AsyncConnection, pieces: list[PieceRow], seq: int) -> list[SegmentRow]:
        """The rows of every cell the pieces touch, of the participant's previous last cell (no longer
        last, it becomes whole) and of the gaps between them and the participant's other media."""
        by_participant: dict[tuple[str, str], list[PieceRow]] = {}
        for p in pieces:
            by_participant.setdefault((p["participant_id"], p["model_version"]), []).append(p)
        rows: list[SegmentRow] = []
        size = self.segment_ms
        for (pid, version), ps in sorted(by_participant.items()):
            call_id, role, name = ps[0]["call_id"], ps[0]["role"], ps[0]["model_name"]
            cells = sorted({p["cell_ms"] for p in ps})
            lo, hi = cells[0], cells[-1]
            key = {"c": call_id, "p": pid, "v": version}
            n = (await conn.execute(_NEIGHBOURS, {**key, "lo": lo, "hi": hi})).one()
            touched = cells + ([n.below] if n.below is not None else [])
            found = (await conn.execute(_CELL_PIECES, {**key, "cells": touched})).mappings().all()
            rows += cell_rows([dict(r) for r in found], n.last, size, self.fusion_of(version))
            rows += [gap_row(call_id, pid, role, version, name, cell, size, seq)
                     for cell in gap_cells(n.below, lo, hi, n.above, size)]
        return rows

    async def _evaluate(self, conn: AsyncConnection, pieces: list[PieceRow]) -> None:
        """Each rule on the rows around the cells this chunk touched, in the chunk's transaction: an
        alert is recorded exactly when the rows that cause it are (published after the commit)."""
        touched: dict[tuple[str, str, str, str], list[int]] = {}
        for p in pieces:
            touched.setdefault((p["call_id"], p["participant_id"], p["role"], p["model_version"]), []).append(
                p["cell_ms"])
        for (call_id, pid, role, version), cells in sorted(touched.items()):
            rules = [r for r in self.rules if r.role == role and not isinstance(r, PhraseRule)]
            if not rules:
                continue
            reach = max(r.reach_ms(self.segment_ms) for r in rules)
            key = {"c": call_id, "p": pid, "v": version}
            found = await conn.execute(_WINDOW_ROWS, {**key, "a": min(cells) - reach, "b": max(cells) + reach})
            rows = [dict(r) for r in found.mappings()]
            for rule in rules:
                fired = evaluate(rule, rows)
                if fired:
                    await conn.execute(_FIRE, {**key, "rule": rule.name, "role": role, "a": fired.start_ms,
                                               "b": fired.end_ms, "details": json.dumps(fired.details)})

    async def _phrases(self, conn: AsyncConnection, call_id: str, heard: Sequence[Heard]) -> None:
        """Phrase rules on what this chunk's participants said: in the chunk's transaction, like the rest."""
        rules = [r for r in self.rules if isinstance(r, PhraseRule)]
        by_participant: dict[tuple[str, str, str], list[tuple[int, int, str]]] = {}
        for h in heard:
            by_participant.setdefault((h.participant_id, h.role, h.words_model), []).append((h.start_ms, h.end_ms,
                                                                                             h.text))
        for (pid, role, version), said in sorted(by_participant.items()):
            for rule in rules:
                fired = phrase_heard(rule, said) if rule.role == role else None
                if fired:
                    await conn.execute(_FIRE, {"c": call_id, "p": pid, "v": version, "rule": rule.name, "role": role,
                                               "a": fired.start_ms, "b": fired.end_ms,
                                               "details": json.dumps(fired.details)})

    async def publish_pending(self, send: AlertSend, call_id: str | None = None, limit: int = 100) -> list[str]:
        """Publish recorded alerts not yet on the topic (of one call, or any), marking them published in
        the same transaction; SKIP LOCKED: two workers never publish the same alert at once. Returns the
        rules published. A failed send rolls the marks back, so the next attempt publishes again."""
        async with self._transaction() as conn:
            rows = (await conn.execute(_PENDING, {"c": call_id, "n": limit})).mappings().all()
            for r in rows:
                alert = AlertMessage(r["id"], r["call_id"], r["participant_id"], r["role"], r["rule"],
                                     r["window_start_ms"], r["window_end_ms"], r["details"], r["model_version"],
                                     r["fired_at"].isoformat(), datetime.now(UTC).isoformat())
                await send(r["call_id"].encode(), alert.encode())
            if rows:
                await conn.execute(text("UPDATE alerts SET published_at = clock_timestamp() WHERE id = ANY(:ids)"),
                                   {"ids": [r["id"] for r in rows]})
        return [r["rule"] for r in rows]

    async def done_at(self, topic: str, partition: int, offset: int) -> str | None:
        """The worker that settled the message at this offset as `done`, if one did."""
        async with self._transaction() as conn:
            return (await conn.execute(_DONE_AT, {"t": topic, "p": partition, "o": offset})).scalar_one_or_none()

    async def end_of(self, topic: str, partition: int, offset: int) -> LedgerEnd | None:
        """The end recorded at this offset, if any: a redelivered message is settled by it."""
        async with self._transaction() as conn:
            row = (await conn.execute(_END_OF, {"t": topic, "p": partition, "o": offset})).first()
        return None if row is None else LedgerEnd(*row)

    async def mark_dead_lettered(self, topic: str, partition: int, offset: int) -> None:
        async with self._transaction() as conn:
            await conn.execute(_DEAD_LETTERED, {"t": topic, "p": partition, "o": offset})

    async def record_failure(self, call: CallRow | None, ledger: LedgerEntry) -> bool:
        """The failed chunk's ledger row, written *before* its dead letter is sent (dead_lettered_at
        NULL until the broker has it); False when another end stands at that offset: a `done` chunk is
        never dead-lettered (a late attempt of a worker that lost the partition must not undo it), and
        the failure becomes a note on that row."""
        async with self._transaction() as conn:
            if call:
                await conn.execute(_call_upsert(call))
            result = await conn.execute(_ledger_upsert(ledger))
            if result.rowcount:
                return True
            await conn.execute(_LATE, {"t": ledger["topic"], "p": ledger["partition"], "o": ledger["offset"],
                                       "n": f"a later attempt by {ledger.get('worker')} failed "
                                            f"({ledger.get('error_reason')}); the first end stands"})
            return False
