"""Read side used by the CLI, the demo and the tests: plain SQL over the documented views."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

TIMELINE = text("""
SELECT participant_id AS participant, role, start_ms, end_ms, label, confidence, neutral, happy, sad, angry, fear,
       disgust, surprise, face_found, speech_found, arousal, media, model_version, evidence ->> 'summary' AS why
FROM emotion_timeline WHERE call_id = :call_id AND model_version = :v ORDER BY start_ms, participant_id""")

TRACK_SUMMARY = text("""
SELECT participant_id AS participant, role, segments, seconds, no_media_seconds, observed_seconds, dominant_label,
       angry_seconds, happy_seconds, neutral_seconds, mean_arousal, face_coverage, speech_coverage
FROM call_participant_summary WHERE call_id = :call_id AND model_version = :v ORDER BY participant_id""")

# The model versions a call has rows of, most segments first (a shadow model writes beside the primary).
VERSIONS = text("""
SELECT model_version, count(*) AS segments FROM emotion_segments WHERE call_id = :call_id
GROUP BY model_version ORDER BY count(*) DESC, model_version""")

PROGRESS = text("""
SELECT count(DISTINCT (stream, seq)) FILTER (WHERE status = 'done') AS done,
       count(DISTINCT (stream, seq)) FILTER (WHERE status = 'failed') AS failed
FROM chunks WHERE call_id = :call_id""")

# README §Is a timeline whole?: no rows = every participant's timeline is on the grid, without holes or
# overlaps, and only its last row may be short. Kept here so the tests run exactly what users run.
TIMELINE_CHECK = """
SELECT participant_id, start_ms, end_ms, next_start FROM (
    SELECT participant_id, start_ms, end_ms,
           lead(start_ms) OVER (PARTITION BY participant_id, model_version ORDER BY start_ms) AS next_start
    FROM emotion_segments WHERE call_id = :call_id) t
WHERE (next_start IS NOT NULL AND next_start <> end_ms)          -- a hole or an overlap
   OR start_ms % 1000 <> 0                                        -- off the 1-s grid
   OR (next_start IS NOT NULL AND end_ms - start_ms <> 1000)      -- a short row before the end"""


def versions(engine: Engine, call_id: str) -> dict[str, int]:
    """Segments per model version of the call, most first."""
    with engine.connect() as conn:
        return {r.model_version: int(r.segments) for r in conn.execute(VERSIONS, {"call_id": call_id})}


def timeline(engine: Engine, call_id: str, model_version: str) -> list[dict]:
    """One model version's timeline: two versions' rows interleaved would read as one flickering call."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(TIMELINE, {"call_id": call_id, "v": model_version})]


SAID = text("""
SELECT participant_id AS participant, start_ms, words FROM timeline_words
WHERE call_id = :call_id AND model_version = :v AND words IS NOT NULL""")


def said(engine: Engine, call_id: str, model_version: str) -> dict[tuple[str, int], str] | None:
    """The words said in each segment, where they are stored and this login may read them (the role
    callstream_transcripts); None when it may not."""
    from sqlalchemy.exc import ProgrammingError

    try:
        with engine.connect() as conn:
            return {(r.participant, r.start_ms): r.words for r in conn.execute(SAID, {"call_id": call_id,
                                                                                      "v": model_version})}
    except ProgrammingError:   # permission denied (or a database before words): no quotes, not an error
        return None


def track_summary(engine: Engine, call_id: str, model_version: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(TRACK_SUMMARY, {"call_id": call_id, "v": model_version})]


def progress(engine: Engine, call_id: str) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(PROGRESS, {"call_id": call_id}).one()
        return int(row.done), int(row.failed)


IN_PROGRESS = text("""
SELECT call_id, chunks_done, chunks_failed, participants, analysed_until_s FROM call_summary
WHERE status = 'in_progress' ORDER BY call_id""")


def in_progress(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(IN_PROGRESS)]


REFUSED = text("""
SELECT count(*) AS n, max(processed_at) AS last FROM chunks WHERE status = 'refused' AND call_id = :c""")
REFUSED_ALL = text("""
SELECT count(*) AS n, count(DISTINCT call_id) AS calls, max(processed_at) AS last FROM chunks
WHERE status = 'refused'""")


def refused(engine: Engine, call_id: str | None = None) -> dict[str, Any]:
    """Chunks refused because their call was erased: how many, (of how many calls), the last when."""
    with engine.connect() as conn:
        if call_id is None:
            return dict(conn.execute(REFUSED_ALL).one()._mapping)
        return dict(conn.execute(REFUSED, {"c": call_id}).one()._mapping)


def erased_at(engine: Engine, call_id: str) -> Any:
    """When the whole call was erased by `callstream forget`, or None."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT erased_at FROM erasures WHERE call_id = :c AND track = '*'"),
                            {"c": call_id}).scalar_one_or_none()


# Offsets the consumer could not read (worker/transport.py), per partition: the runs of consecutive
# offsets, so a batch of many records is one line.
UNREADABLE = text("""
SELECT topic, partition, min("offset") AS first, max("offset") AS last, count(*) AS n, max(processed_at) AS at
FROM (SELECT topic, partition, "offset", processed_at,
             "offset" - row_number() OVER (PARTITION BY topic, partition ORDER BY "offset") AS run
      FROM chunks WHERE status = 'failed' AND error_reason = 'unreadable_batch' AND topic = :t) r
GROUP BY topic, partition, run ORDER BY topic, partition, first""")


def unreadable(engine: Engine, topic: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(UNREADABLE, {"t": topic})]
