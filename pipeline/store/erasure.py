"""Erasure and retention in Postgres: `callstream forget` and `callstream retention apply`.

Forgetting a call deletes its rows and leaves a tombstone (table `erasures`) that the worker checks, so a
replay of the same chunks cannot bring the call back; the object-store side is the caller's (it needs
the claim-check URIs and dead-letter sources this returns before the ledger rows go). Retention deletes
in batches so a large purge never holds long locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Engine


@dataclass
class Forgotten:
    segments: int = 0
    ledger_rows: int = 0
    calls: int = 0
    claim_checks: list[str] = field(default_factory=list)     # s3:// URIs the ledger knew of
    dead_letter_sources: list[str] = field(default_factory=list)  # topic/partition/offset of its dead letters


def forget(engine: Engine, call_id: str, track: str | None = None) -> Forgotten:
    """Delete every row of the call (or of one participant, `track` being its id) and leave a tombstone,
    in one transaction."""
    out = Forgotten()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO erasures (call_id, track) VALUES (:c, :t) ON CONFLICT DO NOTHING"),
                     {"c": call_id, "t": track or "*"})
        if track:
            out.segments = conn.execute(text("DELETE FROM emotion_segments WHERE call_id = :c AND participant_id = :t"),
                                        {"c": call_id, "t": track}).rowcount
            conn.execute(text("DELETE FROM segment_pieces WHERE call_id = :c AND participant_id = :t"),
                         {"c": call_id, "t": track})
            conn.execute(text("DELETE FROM utterance_pieces WHERE call_id = :c AND participant_id = :t"),
                         {"c": call_id, "t": track})
            conn.execute(text("DELETE FROM speech_activity WHERE call_id = :c AND participant_id = :t"),
                         {"c": call_id, "t": track})
            conn.execute(text("DELETE FROM alerts WHERE call_id = :c AND participant_id = :t"),
                         {"c": call_id, "t": track})
            return out
        rows = conn.execute(text('SELECT claim_check, status, topic, partition, "offset" FROM chunks '
                                 "WHERE call_id = :c"), {"c": call_id}).all()
        out.claim_checks = sorted({r.claim_check for r in rows if r.claim_check})
        out.dead_letter_sources = [f"{r.topic}/{r.partition}/{r.offset}" for r in rows if r.status == "failed"]
        out.segments = conn.execute(text("DELETE FROM emotion_segments WHERE call_id = :c"), {"c": call_id}).rowcount
        conn.execute(text("DELETE FROM segment_pieces WHERE call_id = :c"), {"c": call_id})
        conn.execute(text("DELETE FROM utterance_pieces WHERE call_id = :c"), {"c": call_id})
        conn.execute(text("DELETE FROM speech_activity WHERE call_id = :c"), {"c": call_id})
        conn.execute(text("DELETE FROM alerts WHERE call_id = :c"), {"c": call_id})
        out.ledger_rows = conn.execute(text("DELETE FROM chunks WHERE call_id = :c"), {"c": call_id}).rowcount
        out.calls = conn.execute(text("DELETE FROM calls WHERE call_id = :c"), {"c": call_id}).rowcount
    return out


def known(engine: Engine, call_id: str) -> bool:
    """Whether anything of the call is stored: its call row, a ledger row or a tombstone."""
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM calls WHERE call_id = :c) "
            "OR EXISTS (SELECT 1 FROM chunks WHERE call_id = :c) "
            "OR EXISTS (SELECT 1 FROM erasures WHERE call_id = :c)"), {"c": call_id}).scalar_one())


def lift(engine: Engine, call_id: str, track: str | None = None) -> int:
    """Remove a tombstone, so that the call's chunks are processed again if they are re-published."""
    with engine.begin() as conn:
        return conn.execute(text("DELETE FROM erasures WHERE call_id = :c AND track = :t"),
                            {"c": call_id, "t": track or "*"}).rowcount


def remaining(engine: Engine, call_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t} WHERE call_id = :c"), {"c": call_id}).scalar_one()
                for t in ("emotion_segments", "segment_pieces", "utterance_pieces", "speech_activity", "chunks",
                          "calls")}


def _batched(engine: Engine, sql: str, params: Mapping[str, object]) -> int:
    total = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(text(sql), params).rowcount
        total += n
        if n == 0:
            return total


def apply_retention(engine: Engine, days: int, batch: int = 5000) -> dict[str, int]:
    """Delete timelines and ledger rows older than `days`, `batch` rows per transaction."""
    p = {"days": days, "n": batch}
    return {
        "emotion_segments": _batched(engine, """DELETE FROM emotion_segments WHERE ctid IN (
            SELECT ctid FROM emotion_segments WHERE updated_at < now() - make_interval(days => :days) LIMIT :n)""", p),
        "segment_pieces": _batched(engine, """DELETE FROM segment_pieces WHERE ctid IN (
            SELECT ctid FROM segment_pieces WHERE updated_at < now() - make_interval(days => :days) LIMIT :n)""", p),
        "utterance_pieces": _batched(engine, """DELETE FROM utterance_pieces WHERE ctid IN (
            SELECT ctid FROM utterance_pieces WHERE updated_at < now() - make_interval(days => :days) LIMIT :n)""", p),
        "speech_activity": _batched(engine, """DELETE FROM speech_activity WHERE ctid IN (
            SELECT ctid FROM speech_activity WHERE updated_at < now() - make_interval(days => :days) LIMIT :n)""", p),
        "alerts": _batched(engine, """DELETE FROM alerts WHERE id IN (
            SELECT id FROM alerts WHERE fired_at < now() - make_interval(days => :days) LIMIT :n)""", p),
        "chunks": _batched(engine, """DELETE FROM chunks WHERE id IN (
            SELECT id FROM chunks WHERE processed_at < now() - make_interval(days => :days) LIMIT :n)""", p),
        "calls": _batched(engine, """DELETE FROM calls WHERE call_id IN (
            SELECT call_id FROM calls c WHERE updated_at < now() - make_interval(days => :days)
              AND NOT EXISTS (SELECT 1 FROM emotion_segments s WHERE s.call_id = c.call_id) LIMIT :n)""", p),
    }


def stale_dead_letter_media(engine: Engine, hours: float) -> list[tuple[int, str]]:
    """(ledger id, claim-check URI) of dead-lettered chunks older than `hours` that still name an object."""
    with engine.connect() as conn:
        rows = conn.execute(text("""SELECT id, claim_check FROM chunks WHERE status = 'failed'
            AND claim_check IS NOT NULL AND processed_at < now() - make_interval(secs => :s)"""),
                            {"s": hours * 3600}).all()
    return [(r.id, r.claim_check) for r in rows]


def done_media(engine: Engine, limit: int = 100_000) -> list[tuple[int, str]]:
    """(ledger id, claim-check URI) of done chunks whose reference was never cleared. The worker deletes
    a done chunk's object after its commit; when that delete failed (object store down, worker killed
    in between), the object is still there, and nothing needs it any more."""
    with engine.connect() as conn:
        rows = conn.execute(text("""SELECT id, claim_check FROM chunks WHERE status = 'done'
            AND claim_check IS NOT NULL ORDER BY id LIMIT :n"""), {"n": limit}).all()
    return [(r.id, r.claim_check) for r in rows]


def mark_media_deleted(engine: Engine, ids: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE chunks SET claim_check = NULL, note = concat_ws('; ', note, 'media deleted') "
                          "WHERE id = ANY(:ids)"), {"ids": ids})
