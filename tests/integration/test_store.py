"""Schema migrations and idempotent upserts against a real Postgres."""

import asyncio

import pytest
from sqlalchemy import text

from pipeline.errors import BadChunk
from pipeline.store.db import async_engine, ensure_schema, sync_engine
from pipeline.store.migrations import MIGRATIONS
from pipeline.store.writer import SegmentWriter

pytestmark = pytest.mark.stack


def _row(call, start, label="happy"):
    probs = dict(neutral=0.1, happy=0.6, sad=0.05, angry=0.1, fear=0.05, disgust=0.05, surprise=0.05)
    return dict(call_id=call, track="customer", start_ms=start, end_ms=start + 1000, model_version="v1",
                model_name="m", label=label, confidence=0.6, face_found=True, speech_found=False,
                face_score=0.99, arousal=None, speech_ratio=0.0, chunk_seq=0, **probs)


def test_migrations_are_idempotent(stack):
    assert ensure_schema(stack.settings) == []
    with sync_engine(stack.settings).connect() as conn:
        versions = [r[0] for r in conn.execute(text("SELECT version FROM schema_migrations ORDER BY 1"))]
    assert versions == [v for v, _, _ in MIGRATIONS]


def test_rewriting_a_chunk_updates_rows_instead_of_adding(stack):
    async def write(label, offset):
        engine = async_engine(stack.settings)
        try:
            ledger = dict(topic="t", partition=0, offset=offset, call_id="store-1", seq=0, status="done")
            await SegmentWriter(engine).commit_chunk(
                dict(call_id="store-1", started_at=None, layout="dual", last_seq=0),
                [_row("store-1", s, label) for s in (0, 1000, 2000)], ledger)
        finally:
            await engine.dispose()

    asyncio.run(write("happy", 7))
    asyncio.run(write("angry", 7))
    with sync_engine(stack.settings).connect() as conn:
        rows = conn.execute(text("SELECT label, count(*) FROM emotion_segments WHERE call_id='store-1' "
                                 "GROUP BY 1")).all()
        ledger = conn.execute(text("SELECT status, attempts FROM chunks WHERE topic='t' AND \"offset\"=7")).all()
        summary = conn.execute(text("SELECT status FROM call_summary WHERE call_id='store-1'")).scalar_one()
    assert rows == [("angry", 3)]
    assert ledger == [("done", 2)]
    assert summary == "complete"


def _commit(stack, call, rows, offset):
    async def go():
        engine = async_engine(stack.settings)
        try:
            ledger = dict(topic="t", partition=1, offset=offset, call_id=call, seq=0, status="done")
            return await SegmentWriter(engine).commit_chunk(
                dict(call_id=call, started_at=None, layout="customer", last_seq=0), rows, ledger)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_a_whole_day_of_rows_commits_in_batches_below_the_parameter_limit(stack):
    rows = [_row("store-long", s * 1000) for s in range(8000)]     # 8000 x 22 parameters >> 65,535
    _commit(stack, "store-long", rows, 100)
    with sync_engine(stack.settings).connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM emotion_segments WHERE call_id='store-long'")).scalar_one()
        assert n == 8000


def test_rows_postgres_refuses_are_the_chunks_fault_not_a_transient_one(stack):
    bad = _row("store-bad", 2**63)                                  # beyond bigint: a DataError
    with pytest.raises(BadChunk) as err:
        _commit(stack, "store-bad", [bad], 101)
    assert err.value.reason == "db_rejected"
    with sync_engine(stack.settings).connect() as conn:            # nothing of it was committed
        assert conn.execute(text("SELECT count(*) FROM chunks WHERE \"offset\"=101")).scalar_one() == 0


def test_completion_is_right_whatever_the_order_and_later_chunks_are_counted(stack):
    async def go():
        engine = async_engine(stack.settings)
        w = SegmentWriter(engine)
        try:
            for seq, eoc in ((0, True), (2, False), (1, False)):      # end-of-call first, the rest later
                await w.commit_chunk(dict(call_id="store-eoc", started_at=None, layout="customer",
                                          last_seq=seq if eoc else None),
                                     [_row("store-eoc", seq * 1000)],
                                     dict(topic="t", partition=2, offset=200 + seq, call_id="store-eoc", seq=seq,
                                          status="done"))
        finally:
            await engine.dispose()

    asyncio.run(go())
    with sync_engine(stack.settings).connect() as conn:
        row = conn.execute(text("SELECT status, chunks_past_end FROM call_summary WHERE call_id='store-eoc'")).one()
    assert tuple(row) == ("complete", 2)


def test_retention_deletes_only_what_is_older_than_the_limit(stack):
    from pipeline.store.erasure import apply_retention

    _commit(stack, "store-old", [_row("store-old", s * 1000) for s in range(3)], 300)
    _commit(stack, "store-new", [_row("store-new", s * 1000) for s in range(3)], 301)
    engine = sync_engine(stack.settings)
    with engine.begin() as conn:
        conn.execute(text("UPDATE emotion_segments SET updated_at = now() - interval '40 days' "
                          "WHERE call_id='store-old'"))
        conn.execute(text("UPDATE chunks SET processed_at = now() - interval '40 days' WHERE call_id='store-old'"))
        conn.execute(text("UPDATE calls SET updated_at = now() - interval '40 days' WHERE call_id='store-old'"))
    counts = apply_retention(engine, 30, batch=2)          # batches smaller than the work: several rounds
    assert counts["emotion_segments"] >= 3 and counts["chunks"] >= 1 and counts["calls"] >= 1
    with engine.connect() as conn:
        left = dict(conn.execute(text("SELECT call_id, count(*) FROM emotion_segments "
                                      "WHERE call_id IN ('store-old', 'store-new') GROUP BY 1")).all())
    assert left == {"store-new": 3}


def test_a_call_erased_while_its_chunk_was_in_flight_gets_no_rows(stack):
    """forget can run between the worker's pre-check and its commit: the commit itself checks again."""
    engine = sync_engine(stack.settings)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO erasures (call_id) VALUES ('store-erased')"))
    _commit(stack, "store-erased", [_row("store-erased", 0)], 400)
    with engine.connect() as conn:
        for table in ("emotion_segments", "chunks", "calls"):
            n = conn.execute(text(f"SELECT count(*) FROM {table} WHERE call_id = 'store-erased'")).scalar_one()
            assert n == 0, table
        status = conn.execute(text("SELECT status FROM chunks WHERE topic = 't' AND \"offset\" = 400")).scalar_one()
    assert status == "erased"
