"""Schema migrations and idempotent upserts against a real Postgres."""

import asyncio

import pytest
from sqlalchemy import text

from pipeline.errors import BadChunk
from pipeline.store.db import async_engine, ensure_schema, sync_engine
from pipeline.store.schema import required, state
from pipeline.store.writer import SegmentWriter

pytestmark = pytest.mark.stack


FACES = {"happy": [0.1, 0.6, 0.05, 0.1, 0.05, 0.05, 0.05], "angry": [0.1, 0.05, 0.05, 0.6, 0.1, 0.05, 0.05]}


def _row(call, start, label="happy", end=None, seq=0, stream="", participant="customer", video=True, speech=0.0):
    """One chunk's piece of the grid cell holding `start` (the whole cell unless `end` cuts it)."""
    end = end or (start // 1000 + 1) * 1000
    span = end - start
    return dict(call_id=call, participant_id=participant, role="customer", model_version="v1", model_name="m",
                cell_ms=start // 1000 * 1000, stream=stream, seq=seq, start_ms=start, end_ms=end,
                video_ms=span if video else 0, audio_ms=span, frames=2 if video else 0, faces=2 if video else 0,
                face_weight=1.98 if video else 0.0, face_probs=FACES[label] if video else None,
                speech_ratio=speech, arousal=0.5)


def test_migrations_are_idempotent(stack):
    assert ensure_schema(stack.settings) == []
    with sync_engine(stack.settings).connect() as conn:
        assert state(conn).version == required()


def test_rewriting_a_chunk_updates_rows_instead_of_adding(stack):
    async def write(label, offset):
        engine = async_engine(stack.settings)
        try:
            ledger = dict(topic="t", partition=0, offset=offset, call_id="store-1", seq=0, status="done",
                          end_of_call=True)
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
            ledger = dict(topic="t", partition=1, offset=offset, call_id=call, seq=rows[0]["seq"] if rows else 0,
                          status="done", end_of_call=True)
            return await SegmentWriter(engine).commit_chunk(
                dict(call_id=call, started_at=None, layout="customer", last_seq=0), rows, ledger)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_a_whole_day_of_rows_commits_in_batches_below_the_parameter_limit(stack):
    rows = [_row("store-long", s * 1000) for s in range(8000)]     # 8000 x 18 parameters >> 65,535
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
                                     [_row("store-eoc", seq * 1000, seq=seq)],
                                     dict(topic="t", partition=2, offset=200 + seq, call_id="store-eoc", seq=seq,
                                          status="done", end_of_call=eoc))
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
        for table in ("emotion_segments", "calls"):
            n = conn.execute(text(f"SELECT count(*) FROM {table} WHERE call_id = 'store-erased'")).scalar_one()
            assert n == 0, table
        # The ledger keeps the message's place and the call id (the tombstone's key), nothing else of it.
        rows = conn.execute(text("SELECT \"offset\", status, error_reason, stream, seq, claim_check, start_ms "
                                 "FROM chunks WHERE call_id = 'store-erased'")).all()
    assert [tuple(r) for r in rows] == [(400, "refused", "call_erased", "", None, None, None)]


def _rows(stack, call):
    with sync_engine(stack.settings).connect() as conn:
        return conn.execute(text("SELECT participant_id, start_ms, end_ms, label, media, face_found, speech_found, "
                                 "video_ms, audio_ms FROM emotion_segments WHERE call_id = :c "
                                 "ORDER BY participant_id, start_ms"), {"c": call}).all()


def test_a_cell_two_chunks_share_is_one_row_whatever_their_order(stack):
    # Chunk a covers 0-5400 ms, chunk b 5400-8000 (a keyframe cut off the grid). Cell 5000 is one row.
    a = [_row("store-grid", s * 1000, seq=0) for s in range(5)] + [_row("store-grid", 5000, end=5400, seq=0)]
    b = [_row("store-grid", 5400, seq=1, video=False, speech=0.9)] + \
        [_row("store-grid", s * 1000, seq=1) for s in (6, 7)]
    _commit(stack, "store-grid", b, 500)          # the later chunk first
    first = _rows(stack, "store-grid")
    assert [(r.start_ms, r.end_ms) for r in first] == [(5000, 6000), (6000, 7000), (7000, 8000)]
    _commit(stack, "store-grid", a, 501)
    _commit(stack, "store-grid", b, 500)          # and a redelivery of it
    rows = _rows(stack, "store-grid")
    assert [(r.start_ms, r.end_ms) for r in rows] == [(s, s + 1000) for s in range(0, 8000, 1000)]
    cell = rows[5]
    assert cell.face_found and cell.speech_found and cell.media == "av"   # face from a, voice from b
    assert (cell.video_ms, cell.audio_ms) == (400, 1000)


def test_gaps_inside_a_timeline_are_rows_without_media_and_only_the_end_is_short(stack):
    _commit(stack, "store-gap", [_row("store-gap", 0), _row("store-gap", 1000)], 600)
    _commit(stack, "store-gap", [_row("store-gap", 5000, seq=1), _row("store-gap", 6000, end=6300, seq=1)], 601)
    rows = _rows(stack, "store-gap")
    assert [(r.start_ms, r.end_ms, r.media) for r in rows] == [
        (0, 1000, "av"), (1000, 2000, "av"), (2000, 3000, "none"), (3000, 4000, "none"), (4000, 5000, "none"),
        (5000, 6000, "av"), (6000, 6300, "av")]
    assert not any(r.face_found or r.speech_found or r.label for r in rows if r.media == "none")
    # The gap is filled later (an out-of-order chunk): the no-media rows become real ones.
    _commit(stack, "store-gap", [_row("store-gap", s * 1000, seq=2) for s in (2, 3, 4)], 602)
    assert [r.media for r in _rows(stack, "store-gap")] == ["av"] * 7


def test_a_redelivered_copy_is_recorded_done_and_points_at_the_first_commit(stack):
    _commit(stack, "store-redo", [_row("store-redo", 0)], 40)

    async def go():
        engine = async_engine(stack.settings)
        try:
            w = SegmentWriter(engine)
            before = await w.committed_at("store-redo", "", 0)
            await w.record_redelivery(dict(topic="t", partition=1, offset=41, call_id="store-redo", seq=0,
                                           status="done", segments=0, note="redelivered"))
            return before, await w.committed_at("store-redo", "", 0), await w.committed_at("store-redo", "", 1)
        finally:
            await engine.dispose()

    assert asyncio.run(go()) == ("t/1/40", "t/1/40", None)
    with sync_engine(stack.settings).connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM emotion_segments WHERE call_id='store-redo'")).scalar_one()
        status = conn.execute(text("SELECT status FROM call_summary WHERE call_id='store-redo'")).scalar_one()
    assert (rows, status) == (1, "complete")


def test_a_worker_transaction_is_bounded_even_when_its_process_stops_mid_batch(stack):
    """Worker sessions end a transaction left idle for 10 s, and on Postgres 17+ any transaction
    older than a minute: a process stopped with its pipelined statements sent but not synced is not
    idle to the server, and held its call's lock for as long as it was stopped."""
    from pipeline.store.db import IDLE_IN_TRANSACTION_S, TRANSACTION_TIMEOUT_S

    async def settings_seen():
        engine = async_engine(stack.settings)
        try:
            async with engine.connect() as conn:
                version = (await conn.execute(text("SHOW server_version_num"))).scalar_one()
                idle = (await conn.execute(text("SHOW idle_in_transaction_session_timeout"))).scalar_one()
                bound = (await conn.execute(text("SELECT current_setting('transaction_timeout', true)"))).scalar()
                return int(version), idle, bound
        finally:
            await engine.dispose()

    version, idle, bound = asyncio.run(settings_seen())
    assert idle == f"{IDLE_IN_TRANSACTION_S}s"
    if version >= 170000:
        assert bound == f"{TRANSACTION_TIMEOUT_S // 60}min"
    else:
        assert bound is None    # not a setting there: the idle bound is all there is


def test_two_versions_that_never_agree_compare_with_zero_agreeing_seconds(stack):
    with sync_engine(stack.settings).begin() as conn:
        for version, label in (("cmp-a", "happy"), ("cmp-b", "angry")):
            conn.execute(text(
                "INSERT INTO emotion_segments (call_id, participant_id, role, track, start_ms, end_ms, model_version, "
                "model_name, label, confidence, face_found, speech_found, chunk_seq) SELECT 'store-cmp', 'c', "
                "'customer', 'customer', s, s + 1000, :v, 'm', :l, 0.9, true, false, 0 "
                "FROM generate_series(0, 2000, 1000) s"), {"v": version, "l": label})
        row = conn.execute(text("SELECT segments, label_agreement, agreeing_seconds FROM model_comparison "
                                "WHERE call_id = 'store-cmp'")).one()
    assert (row.segments, row.label_agreement, row.agreeing_seconds) == (3, 0, 0)
