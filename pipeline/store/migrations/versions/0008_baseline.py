"""baseline: the schema the hand-written migrations 1..8 built

Revision ID: 0008
Revises:
Create Date: 2026-12-05

Databases those migrations built are stamped here, not rebuilt (pipeline.store.schema.upgrade);
tests/integration/test_migrations.py checks that both roads end in the same schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = None
branch_labels = None
depends_on = None

PROBS = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
_label_seconds = ",\n".join(
    f"       sum(CASE WHEN label = '{p}' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS {p}_seconds" for p in PROBS
)
_prob_diff = " + ".join(f"abs(a.{p} - b.{p})" for p in PROBS)

ROLES = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'callstream_writer') THEN
        CREATE ROLE callstream_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'callstream_analyst') THEN
        CREATE ROLE callstream_analyst NOLOGIN;
    END IF;
END $$
"""

# Each view once, in dependency order. A later revision that changes one steps back to the body here
# (op.get_context().script.get_revision("0008").module.VIEWS).
VIEWS = {
    "emotion_timeline": """
SELECT s.call_id, s.participant_id, s.role, s.track, s.start_ms, s.end_ms,
       s.start_ms / 1000.0 AS start_s, (s.end_ms - s.start_ms) / 1000.0 AS seconds,
       c.started_at + s.start_ms * interval '1 millisecond' AS at,
       s.label, s.confidence, s.neutral, s.happy, s.sad, s.angry, s.fear, s.disgust, s.surprise,
       s.face_found, s.speech_found, s.arousal, s.media, s.video_ms, s.audio_ms, s.model_name, s.model_version,
       s.evidence
FROM emotion_segments s LEFT JOIN calls c USING (call_id)
""",
    "call_participant_summary": f"""
SELECT call_id, participant_id, min(role) AS role, model_version,
       count(*) AS segments,
       min(start_ms) / 1000.0 AS from_s,
       max(end_ms) / 1000.0 AS until_s,
       sum(end_ms - start_ms) / 1000.0 AS seconds,
       sum(CASE WHEN media = 'none' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS no_media_seconds,
       sum(CASE WHEN label IS NOT NULL THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS observed_seconds,
{_label_seconds},
       mode() WITHIN GROUP (ORDER BY label) FILTER (WHERE label IS NOT NULL) AS dominant_label,
       avg(arousal) AS mean_arousal,
       avg(CASE WHEN face_found THEN 1.0 ELSE 0.0 END) AS face_coverage,
       avg(CASE WHEN speech_found THEN 1.0 ELSE 0.0 END) AS speech_coverage
FROM emotion_segments GROUP BY call_id, participant_id, model_version
""",
    # The v1 name, kept for existing queries: one row per participant, track being the participant id.
    "call_track_summary": """
SELECT call_id, participant_id AS track, model_version, segments, seconds, observed_seconds, neutral_seconds,
       happy_seconds, sad_seconds, angry_seconds, fear_seconds, disgust_seconds, surprise_seconds,
       dominant_label, mean_arousal, face_coverage, speech_coverage, participant_id, role, no_media_seconds
FROM call_participant_summary
""",
    # A call is complete once every chunk stream it has (one per participant and media, or the
    # whole-call stream of v1 chunks) has an end-of-call seq and seqs 0..end are all settled.
    "call_stream_summary": """
WITH latest AS (
    SELECT DISTINCT ON (call_id, stream, seq) call_id, stream, seq, status
    FROM chunks WHERE call_id IS NOT NULL AND seq IS NOT NULL
    ORDER BY call_id, stream, seq, processed_at DESC
), ends AS (
    SELECT call_id, stream, max(seq) FILTER (WHERE end_of_call) AS last_seq
    FROM chunks WHERE call_id IS NOT NULL AND seq IS NOT NULL GROUP BY call_id, stream
)
SELECT l.call_id, l.stream, e.last_seq,
       count(*) FILTER (WHERE l.status = 'done') AS chunks_done,
       count(*) FILTER (WHERE l.status = 'failed') AS chunks_failed,
       count(*) FILTER (WHERE l.seq > e.last_seq) AS chunks_past_end,
       CASE WHEN e.last_seq IS NOT NULL
                 AND count(*) FILTER (WHERE l.status = 'done' AND l.seq <= e.last_seq) = e.last_seq + 1
                 THEN 'complete'
            WHEN e.last_seq IS NOT NULL
                 AND count(*) FILTER (WHERE l.seq <= e.last_seq) = e.last_seq + 1
                 THEN 'complete_with_failures'
            ELSE 'in_progress' END AS status
FROM latest l JOIN ends e USING (call_id, stream)
GROUP BY l.call_id, l.stream, e.last_seq
""",
    "call_summary": """
SELECT c.call_id, c.started_at, c.layout, c.last_seq,
       coalesce(sum(st.chunks_done), 0) AS chunks_done,
       coalesce(sum(st.chunks_failed), 0) AS chunks_failed,
       coalesce(sum(st.chunks_past_end), 0) AS chunks_past_end,
       CASE WHEN count(st.stream) = 0 THEN 'in_progress'
            WHEN bool_and(st.status = 'complete') THEN 'complete'
            WHEN bool_and(st.status <> 'in_progress') THEN 'complete_with_failures'
            ELSE 'in_progress' END AS status,
       count(st.stream) AS streams,
       (SELECT count(DISTINCT participant_id) FROM emotion_segments s WHERE s.call_id = c.call_id) AS participants,
       (SELECT max(end_ms) / 1000.0 FROM emotion_segments s WHERE s.call_id = c.call_id) AS analysed_until_s
FROM calls c LEFT JOIN call_stream_summary st USING (call_id)
GROUP BY c.call_id, c.started_at, c.layout, c.last_seq
""",
    # Two model versions on the same segments (a shadow beside the primary): each pair once, a < b.
    "model_comparison": f"""
SELECT a.call_id, a.participant_id, min(a.role) AS role,
       a.model_version AS model_version_a, b.model_version AS model_version_b,
       count(*) AS segments,
       count(*) FILTER (WHERE a.label IS NOT NULL AND b.label IS NOT NULL) AS labelled_by_both,
       count(*) FILTER (WHERE a.label IS NOT NULL AND b.label IS NULL) AS labelled_by_a_only,
       count(*) FILTER (WHERE a.label IS NULL AND b.label IS NOT NULL) AS labelled_by_b_only,
       avg(CASE WHEN a.label = b.label THEN 1.0 ELSE 0.0 END)
           FILTER (WHERE a.label IS NOT NULL AND b.label IS NOT NULL) AS label_agreement,
       avg(({_prob_diff}) / 7.0) AS mean_abs_prob_diff,
       sum(a.end_ms - a.start_ms) FILTER (WHERE a.label IS NOT NULL AND a.label = b.label) / 1000.0
           AS agreeing_seconds
FROM emotion_segments a
JOIN emotion_segments b ON b.call_id = a.call_id AND b.participant_id = a.participant_id
                       AND b.start_ms = a.start_ms AND b.model_version > a.model_version
GROUP BY a.call_id, a.participant_id, a.model_version, b.model_version
""",
    # Seconds per label, one row per (call, participant, model version, label): versions side by side.
    "label_seconds": """
SELECT call_id, participant_id, min(role) AS role, model_version, label,
       count(*) AS segments, sum(end_ms - start_ms) / 1000.0 AS seconds
FROM emotion_segments WHERE label IS NOT NULL
GROUP BY call_id, participant_id, model_version, label
""",
}
VIEW_COMMENTS = ("COMMENT ON VIEW model_comparison IS "
                 "'two model versions on the same segments: agreement, mean |p_a - p_b|'")

GRANTS = """
GRANT SELECT, INSERT, UPDATE, DELETE ON calls, chunks, emotion_segments, segment_pieces, erasures, alerts
    TO callstream_writer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO callstream_writer;
GRANT SELECT ON calls, emotion_segments, alerts, emotion_timeline, call_participant_summary, call_track_summary,
    call_summary, call_stream_summary, model_comparison, label_seconds TO callstream_analyst;
"""


def upgrade() -> None:
    _tables()
    op.execute(ROLES)
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")
    op.execute(VIEW_COMMENTS)
    op.execute(GRANTS)


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: drop the database instead")


def _tables() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("participant_id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("window_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("window_end_ms", sa.BigInteger(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("call_id", "rule", name="alerts_once"),
        comment="live alerts: the first window of a call where a rule held; published_at once on the topic",
    )
    op.create_index(
        "alerts_unpublished", "alerts", ["fired_at"], unique=False, postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("layout", sa.String(length=16), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=True, comment="highest seq marked end-of-call, once seen"),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("call_id"),
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column(
            "stream",
            sa.String(length=140),
            server_default="",
            nullable=False,
            comment="participant-id/media of a per-participant chunk; empty for whole-call chunks",
        ),
        sa.Column("end_of_call", sa.Boolean(), nullable=True),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="done | failed | refused (error_reason says why: call_erased)",
        ),
        sa.Column("error_reason", sa.String(length=64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column(
            "note", sa.Text(), nullable=True, comment="what was adjusted on a done chunk, e.g. a clamped duration"
        ),
        sa.Column("start_ms", sa.BigInteger(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("claim_check", sa.Text(), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetch_ms", sa.Float(), nullable=True),
        sa.Column("decode_ms", sa.Float(), nullable=True),
        sa.Column("inference_ms", sa.Float(), nullable=True),
        sa.Column("db_ms", sa.Float(), nullable=True, comment="time to commit the rows, measured up to the commit"),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
            comment="when the chunk's rows were written, just before commit",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("topic", "partition", "offset", name="chunks_message_key"),
    )
    op.create_index("chunks_call_seq", "chunks", ["call_id", "seq"], unique=False)
    op.create_index("chunks_call_stream_seq", "chunks", ["call_id", "stream", "seq"], unique=False)
    op.create_index(
        "chunks_refused", "chunks", ["call_id"], unique=False, postgresql_where=sa.text("status = 'refused'")
    )
    op.create_table(
        "emotion_segments",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column(
            "participant_id",
            sa.String(length=128),
            nullable=False,
            comment="recorder's id; agent | customer for v1 layouts",
        ),
        sa.Column("start_ms", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False, comment="customer | agent | supervisor | other"),
        sa.Column("track", sa.String(length=16), nullable=False, comment="deprecated (v1): the role"),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("neutral", sa.Float(), nullable=True),
        sa.Column("happy", sa.Float(), nullable=True),
        sa.Column("sad", sa.Float(), nullable=True),
        sa.Column("angry", sa.Float(), nullable=True),
        sa.Column("fear", sa.Float(), nullable=True),
        sa.Column("disgust", sa.Float(), nullable=True),
        sa.Column("surprise", sa.Float(), nullable=True),
        sa.Column("label", sa.String(length=16), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("face_found", sa.Boolean(), nullable=False),
        sa.Column("speech_found", sa.Boolean(), nullable=False),
        sa.Column("face_score", sa.Float(), nullable=True, comment="mean face-detection confidence"),
        sa.Column("arousal", sa.Float(), nullable=True, comment="prosodic arousal 0..1 when speech was found"),
        sa.Column("speech_ratio", sa.Float(), nullable=True),
        sa.Column(
            "media", sa.String(length=8), nullable=True, comment="av | audio | video | none (a gap); NULL before v5"
        ),
        sa.Column("video_ms", sa.Integer(), nullable=True, comment="ms of the cell with the participant's video"),
        sa.Column("audio_ms", sa.Integer(), nullable=True, comment="ms of the cell with the participant's audio"),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("chunk_seq", sa.Integer(), nullable=False, comment="a chunk that contributed (the first by seq)"),
        sa.Column(
            "evidence",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="what drove the label: face frames and top classes, voice cues or top classes, "
            "fusion weights, a one-line summary",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "participant_id", "start_ms", "model_version"),
    )
    op.create_table(
        "erasures",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column(
            "track",
            sa.String(length=128),
            server_default="*",
            nullable=False,
            comment="participant id, or * for the whole call",
        ),
        sa.Column("erased_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "track"),
        comment="tombstones of callstream forget: chunks of these calls (track * = all) are refused",
    )
    op.create_table(
        "segment_pieces",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("participant_id", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("cell_ms", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.String(length=140), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=False),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("video_ms", sa.Integer(), nullable=False),
        sa.Column("audio_ms", sa.Integer(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("faces", sa.Integer(), nullable=False),
        sa.Column("face_weight", sa.Float(), nullable=False),
        sa.Column("face_probs", postgresql.ARRAY(sa.Float()), nullable=True),
        sa.Column("speech_ratio", sa.Float(), nullable=False),
        sa.Column("arousal", sa.Float(), nullable=True),
        sa.Column(
            "voice_probs",
            postgresql.ARRAY(sa.Float()),
            nullable=True,
            comment="the voice-emotion net's DFEW distribution over the piece's speech",
        ),
        sa.Column(
            "voice_cues",
            postgresql.ARRAY(sa.Float()),
            nullable=True,
            comment="energy, pitch variability, rate z-scores behind the arousal",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "participant_id", "model_version", "cell_ms", "stream", "seq"),
        comment="what each chunk saw of a participant in a grid cell; emotion_segments merges them",
    )
