"""Read side used by the CLI, the demo and the tests: plain SQL over the documented views."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

TIMELINE = text("""
SELECT track, start_ms, end_ms, label, confidence, neutral, happy, sad, angry, fear, disgust, surprise,
       face_found, speech_found, arousal, model_version
FROM emotion_timeline WHERE call_id = :call_id ORDER BY start_ms, track""")

TRACK_SUMMARY = text("""
SELECT track, segments, seconds, observed_seconds, dominant_label, angry_seconds, happy_seconds,
       neutral_seconds, mean_arousal, face_coverage, speech_coverage
FROM call_track_summary WHERE call_id = :call_id ORDER BY track""")

PROGRESS = text("""
SELECT count(DISTINCT seq) FILTER (WHERE status = 'done') AS done,
       count(DISTINCT seq) FILTER (WHERE status = 'failed') AS failed
FROM chunks WHERE call_id = :call_id""")


def timeline(engine: Engine, call_id: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(TIMELINE, {"call_id": call_id})]


def track_summary(engine: Engine, call_id: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(TRACK_SUMMARY, {"call_id": call_id})]


def progress(engine: Engine, call_id: str) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(PROGRESS, {"call_id": call_id}).one()
        return int(row.done), int(row.failed)
