"""analyst views: the primary model version by default, numeric columns rounded, talk and silence, the trajectory

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

The views of the baseline keep a row per model version (model_comparison needs them). These read one:
the primary, the version workers write for as CALLSTREAM_TRITON_MODEL (table served_models, which
workers keep current at start; before any worker has started, every version, each its own row).
Their numbers are `numeric`, rounded to 3 places, so that round(), avg() and sums work as analysts
write them. Speech, talk and silence come from the rows' speech_ratio: seconds of a participant's
own audio, so only participants whose media is analysed have them (customers by default; an agent's
talk time is employee monitoring, docs/COMPLIANCE.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ROLE_COMMENT = "primary | shadow | other (no worker writes for it now), as the last worker to start said"
PROBS = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
NEGATIVE = "coalesce(s.sad, 0) + coalesce(s.angry, 0) + coalesce(s.fear, 0) + coalesce(s.disgust, 0)"

PRIMARY = """NOT EXISTS (SELECT 1 FROM served_models WHERE role = 'primary')
   OR {t}.model_version = (SELECT model_version FROM served_models WHERE role = 'primary'
                           ORDER BY last_seen_at DESC LIMIT 1)"""
# Columns named, not s.*: a star is expanded when the view is made, in the table's column order, which
# differs between a fresh database and one that Alembic stamped over the hand-written migrations.
COLUMNS = ("call_id, participant_id, role, model_version, start_ms, end_ms, label, media, audio_ms, speech_ratio, "
           "speech_found, face_found, arousal, word_valence, happy, sad, angry, fear, disgust, evidence")
PRIMARY_ROWS = f"SELECT {COLUMNS} FROM emotion_segments s WHERE {PRIMARY.format(t='s')}"

TIMELINE = ", ".join(f"t.{c}" for c in (
    "call_id", "participant_id", "role", "track", "start_ms", "end_ms", "start_s", "seconds", "at", "label",
    "confidence", *PROBS, "face_found", "speech_found", "arousal", "media", "video_ms", "audio_ms", "model_name",
    "model_version", "evidence", "arousal_source", "voice_valence", "voice_arousal", "voice_dominance",
    "word_valence"))
_label_seconds = ",\n".join(
    f"       round(coalesce(sum(s.end_ms - s.start_ms) FILTER (WHERE s.label = '{p}'), 0) / 1000.0, 3) AS {p}_seconds"
    for p in PROBS)

VIEWS = {
    "primary_timeline": f"""
SELECT {TIMELINE} FROM emotion_timeline t WHERE {PRIMARY.format(t='t')}
""",
    "participant_summary": f"""
WITH s AS ({PRIMARY_ROWS}),
talking AS (SELECT call_id, start_ms, participant_id FROM s WHERE speech_found)
SELECT s.call_id, s.participant_id, min(s.role) AS role, s.model_version,
       round(sum(s.end_ms - s.start_ms) / 1000.0, 3) AS seconds,
       round(coalesce(sum(s.end_ms - s.start_ms) FILTER (WHERE s.label IS NOT NULL), 0) / 1000.0, 3)
           AS labelled_seconds,
       round(coalesce(sum(s.end_ms - s.start_ms) FILTER (WHERE s.media = 'none'), 0) / 1000.0, 3) AS no_media_seconds,
       round(coalesce(sum(s.audio_ms), 0) / 1000.0, 3) AS audio_seconds,
       round(coalesce(sum(s.speech_ratio * s.audio_ms), 0)::numeric / 1000, 3) AS talk_seconds,
       round(coalesce(sum((1 - s.speech_ratio) * s.audio_ms), 0)::numeric / 1000, 3) AS silence_seconds,
       round(coalesce(sum(s.end_ms - s.start_ms) FILTER (WHERE s.speech_found AND EXISTS (
           SELECT 1 FROM talking o WHERE o.call_id = s.call_id AND o.start_ms = s.start_ms
             AND o.participant_id <> s.participant_id)), 0) / 1000.0, 3) AS overlap_seconds,
{_label_seconds},
       mode() WITHIN GROUP (ORDER BY s.label) FILTER (WHERE s.label IS NOT NULL) AS dominant_label,
       round(avg(s.arousal)::numeric, 3) AS mean_arousal,
       round(avg(s.word_valence)::numeric, 3) AS mean_word_valence,
       round(avg(CASE WHEN s.face_found THEN 1 ELSE 0 END)::numeric, 3) AS face_coverage,
       round(avg(CASE WHEN s.speech_found THEN 1 ELSE 0 END)::numeric, 3) AS speech_coverage
FROM s GROUP BY s.call_id, s.participant_id, s.model_version
""",
    "call_overview": f"""
WITH s AS ({PRIMARY_ROWS})
SELECT c.call_id, c.started_at,
       c.started_at + max(s.end_ms) * interval '1 millisecond' AS ended_at,
       round(coalesce(max(s.end_ms), 0) / 1000.0, 3) AS duration_seconds,
       count(DISTINCT s.participant_id) AS participants,
       count(DISTINCT s.participant_id) FILTER (WHERE s.label IS NOT NULL) AS labelled_participants,
       cs.status, cs.chunks_done, cs.chunks_failed
FROM calls c LEFT JOIN s USING (call_id) LEFT JOIN call_summary cs USING (call_id)
GROUP BY c.call_id, c.started_at, cs.status, cs.chunks_done, cs.chunks_failed
""",
    # Thirds of each participant's own span (a call of 90 s has thirds of 30 s, one of 30 min of 10 min);
    # the worst moment: the labelled segment with the most probability on the unpleasant labels.
    "participant_trajectory": f"""
WITH s AS ({PRIMARY_ROWS}),
span AS (SELECT call_id, participant_id, model_version, min(start_ms) AS first_ms, max(end_ms) AS last_ms
         FROM s GROUP BY call_id, participant_id, model_version),
placed AS (
    SELECT s.call_id, s.participant_id, s.role, s.model_version, s.start_ms, s.label, s.happy, s.arousal,
           s.evidence, {NEGATIVE} AS negative,
           least(2, floor(3.0 * (s.start_ms - p.first_ms) / greatest(p.last_ms - p.first_ms, 1)))::int AS third
    FROM s JOIN span p USING (call_id, participant_id, model_version)),
worst AS (
    SELECT DISTINCT ON (call_id, participant_id, model_version) call_id, participant_id, model_version,
           start_ms AS worst_ms, label AS worst_label, negative AS worst_negative,
           evidence ->> 'summary' AS worst_evidence
    FROM placed WHERE label IS NOT NULL
    ORDER BY call_id, participant_id, model_version, negative DESC, start_ms)
SELECT p.call_id, p.participant_id, min(p.role) AS role, p.model_version,
       mode() WITHIN GROUP (ORDER BY p.label) FILTER (WHERE p.third = 0 AND p.label IS NOT NULL) AS start_label,
       mode() WITHIN GROUP (ORDER BY p.label) FILTER (WHERE p.third = 1 AND p.label IS NOT NULL) AS middle_label,
       mode() WITHIN GROUP (ORDER BY p.label) FILTER (WHERE p.third = 2 AND p.label IS NOT NULL) AS end_label,
       round(avg(p.negative) FILTER (WHERE p.third = 0 AND p.label IS NOT NULL)::numeric, 3) AS start_negative,
       round(avg(p.negative) FILTER (WHERE p.third = 1 AND p.label IS NOT NULL)::numeric, 3) AS middle_negative,
       round(avg(p.negative) FILTER (WHERE p.third = 2 AND p.label IS NOT NULL)::numeric, 3) AS end_negative,
       round(avg(p.happy) FILTER (WHERE p.third = 0)::numeric, 3) AS start_happy,
       round(avg(p.happy) FILTER (WHERE p.third = 2)::numeric, 3) AS end_happy,
       round(avg(p.arousal) FILTER (WHERE p.third = 0)::numeric, 3) AS start_arousal,
       round(avg(p.arousal) FILTER (WHERE p.third = 2)::numeric, 3) AS end_arousal,
       round(min(w.worst_ms) / 1000.0, 3) AS worst_s, min(w.worst_label) AS worst_label,
       round(min(w.worst_negative)::numeric, 3) AS worst_negative, min(w.worst_evidence) AS worst_evidence
FROM placed p LEFT JOIN worst w USING (call_id, participant_id, model_version)
GROUP BY p.call_id, p.participant_id, p.model_version
""",
}


def upgrade() -> None:
    op.create_table(
        "served_models",
        sa.Column("model_version", sa.String(128), primary_key=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, comment=ROLE_COMMENT),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role IN ('primary', 'shadow', 'other')", name="served_models_role"),
        comment="the model versions workers write rows for; the analyst views read the primary's")
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")
    op.execute("GRANT SELECT, INSERT, UPDATE ON served_models TO callstream_writer")
    op.execute(f"GRANT SELECT ON served_models, {', '.join(VIEWS)} TO callstream_analyst, callstream_transcripts")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    op.drop_table("served_models")
