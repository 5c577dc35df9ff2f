"""speech activity: talk of participants measured without emotion analysis, and talk views over everyone

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

speech_activity holds the talk the `speech` model measured of roles in CALLSTREAM_SPEECH_ACTIVITY_ROLES
(agents, where an operator chooses to: docs/COMPLIANCE.md). talk_cells puts a cell of it beside the
analysed participants' primary rows, so participant_talk gives everyone's talk, silence and overlap, and
participant_summary's overlap_seconds counts an agent talking over a customer where the agent is measured.
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_0013 = importlib.import_module("pipeline.store.migrations.versions.0013_analyst_views")

TALK_CELLS = f"""
WITH s AS ({_0013.PRIMARY_ROWS})
SELECT s.call_id, s.participant_id, s.role, s.start_ms, s.end_ms, s.audio_ms,
       s.speech_ratio * s.audio_ms AS speech_ms, s.speech_found, 'emotion'::text AS measured_by
FROM s
UNION ALL
SELECT a.call_id, a.participant_id, min(a.role), a.cell_ms, max(a.end_ms), sum(a.audio_ms)::int,
       sum(a.speech_ms)::float8, sum(a.audio_ms) > 0 AND sum(a.speech_ms) >= max(a.min_speech_ratio) * sum(a.audio_ms),
       'speech_activity'::text
FROM speech_activity a
WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.call_id = a.call_id AND s.participant_id = a.participant_id
                                      AND s.start_ms = a.cell_ms)
GROUP BY a.call_id, a.participant_id, a.cell_ms
"""

PARTICIPANT_TALK = """
SELECT c.call_id, c.participant_id, min(c.role) AS role, min(c.measured_by) AS measured_by,
       round(sum(c.audio_ms) / 1000.0, 3) AS audio_seconds,
       round(sum(c.speech_ms)::numeric / 1000, 3) AS talk_seconds,
       round(sum(c.audio_ms - c.speech_ms)::numeric / 1000, 3) AS silence_seconds,
       round(coalesce(sum(c.end_ms - c.start_ms) FILTER (WHERE c.speech_found AND EXISTS (
           SELECT 1 FROM talk_cells o WHERE o.call_id = c.call_id AND o.start_ms = c.start_ms
             AND o.participant_id <> c.participant_id AND o.speech_found)), 0) / 1000.0, 3) AS overlap_seconds,
       round((sum(c.speech_ms) / nullif(sum(sum(c.speech_ms)) OVER (PARTITION BY c.call_id), 0))::numeric, 3)
           AS talk_share
FROM talk_cells c GROUP BY c.call_id, c.participant_id
"""

_TALKING_0013 = "talking AS (SELECT call_id, start_ms, participant_id FROM s WHERE speech_found)"
_TALKING = "talking AS (SELECT call_id, start_ms, participant_id FROM talk_cells WHERE speech_found)"
assert _TALKING_0013 in _0013.VIEWS["participant_summary"]


def upgrade() -> None:
    op.create_table(
        "speech_activity",
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("participant_id", sa.String(128), primary_key=True),
        sa.Column("stream", sa.String(140), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("start_ms", sa.BigInteger(), primary_key=True),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("cell_ms", sa.BigInteger(), nullable=False, comment="the segment grid cell the piece belongs to"),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("audio_ms", sa.Integer(), nullable=False, comment="audio of the piece"),
        sa.Column("speech_ms", sa.Integer(), nullable=False, comment="of it, what the VAD called speech"),
        sa.Column("min_speech_ratio", sa.Float(), nullable=False, comment="share of speech that makes a cell talk"),
        sa.Column("speech_model", sa.String(128), nullable=False, comment="the speech model's version"),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        comment="speech measured without emotion analysis, a row per chunk's piece of a cell")
    op.execute(f"CREATE VIEW talk_cells AS {TALK_CELLS}")
    op.execute(f"CREATE VIEW participant_talk AS {PARTICIPANT_TALK}")
    op.execute("CREATE OR REPLACE VIEW participant_summary AS "
               + _0013.VIEWS["participant_summary"].replace(_TALKING_0013, _TALKING))
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON speech_activity TO callstream_writer")
    op.execute("GRANT SELECT ON speech_activity, talk_cells, participant_talk TO callstream_analyst, "
               "callstream_transcripts")


def downgrade() -> None:
    op.execute("CREATE OR REPLACE VIEW participant_summary AS " + _0013.VIEWS["participant_summary"])
    op.execute("DROP VIEW participant_talk")
    op.execute("DROP VIEW talk_cells")
    op.drop_table("speech_activity")
