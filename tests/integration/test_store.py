"""Schema migrations and idempotent upserts against a real Postgres."""

import asyncio

import pytest
from sqlalchemy import text

from pipeline.store.db import async_engine, ensure_schema, sync_engine
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
    assert versions == [1, 2]


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
        rows = conn.execute(text("SELECT label, count(*) FROM emotion_segments WHERE call_id='store-1' GROUP BY 1")).all()
        ledger = conn.execute(text("SELECT status, attempts FROM chunks WHERE topic='t' AND \"offset\"=7")).all()
        summary = conn.execute(text("SELECT status FROM call_summary WHERE call_id='store-1'")).scalar_one()
    assert rows == [("angry", 3)]
    assert ledger == [("done", 2)]
    assert summary == "complete"
