from itertools import pairwise

from sqlalchemy import text

from pipeline.store.db import sync_engine
from tests.stack import wait_for


def query(settings, sql: str, **params) -> list:
    engine = sync_engine(settings)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()
    finally:
        engine.dispose()


def execute(settings, sql: str, **params) -> None:
    """A write, committed."""
    engine = sync_engine(settings)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def wait_chunks(settings, call_id: str, n: int, timeout: float = 180, status: str = "done") -> None:
    wait_for(lambda: query(settings, "SELECT count(*) FROM (SELECT DISTINCT stream, seq FROM chunks "
                                     "WHERE call_id=:c AND status=:s) x", c=call_id, s=status)[0][0] >= n,
             timeout, f"{n} {status} chunks of {call_id}")


def segments(settings, call_id: str) -> list:
    return query(settings, "SELECT track, start_ms, end_ms, label, face_found, speech_found FROM emotion_timeline "
                           "WHERE call_id=:c ORDER BY track, start_ms", c=call_id)


def assert_contiguous(rows, track: str, start: int, end: int) -> None:
    mine = [r for r in rows if r.track == track]
    assert mine, f"no segments for {track}"
    assert mine[0].start_ms == start and abs(mine[-1].end_ms - end) <= 200
    for a, b in pairwise(mine):
        assert a.end_ms == b.start_ms, f"gap or overlap between {a} and {b}"
