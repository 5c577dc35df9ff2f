"""words: utterances per chunk, their valence on pieces and segments, a role of their own for transcripts

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

Transcripts are personal data beyond the emotion rows: the text and the words are readable by
callstream_transcripts only. callstream_analyst reads every other column of utterance_pieces (valence,
timing, counts) and the view utterance_valence; the views that show text (utterances, timeline_words)
are granted to callstream_transcripts alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'callstream_transcripts') THEN
        CREATE ROLE callstream_transcripts NOLOGIN;
    END IF;
END $$
"""

# An utterance a chunk boundary cut is stored as two pieces, the first open at its end, the second open
# at its start; a piece starts a new utterance unless it continues an open one within 2 s.
_TURNS = """
WITH ordered AS (
    SELECT u.*, lag(u.open_end) OVER w AS previous_open, lag(u.end_ms) OVER w AS previous_end
    FROM utterance_pieces u WINDOW w AS (PARTITION BY u.call_id, u.participant_id ORDER BY u.start_ms, u.seq)
), numbered AS (
    SELECT *, sum(CASE WHEN open_start AND coalesce(previous_open, false) AND start_ms - previous_end <= 2000
                       THEN 0 ELSE 1 END)
              OVER (PARTITION BY call_id, participant_id ORDER BY start_ms, seq) AS utterance
    FROM ordered
)
SELECT call_id, participant_id, min(role) AS role, utterance, min(start_ms) AS start_ms, max(end_ms) AS end_ms,
       min(start_ms) / 1000.0 AS start_s, (max(end_ms) - min(start_ms)) / 1000.0 AS seconds,
       sum(word_count) AS word_count, sum(valence * word_count) / nullif(sum(word_count), 0) AS valence,
       count(*) AS pieces, min(words_model) AS words_model{text}
FROM numbered GROUP BY call_id, participant_id, utterance
"""
UTTERANCES = _TURNS.format(text=",\n       string_agg(text, ' ' ORDER BY start_ms) AS text")
UTTERANCE_VALENCE = _TURNS.format(text="")
# Each segment's words: a word belongs to the segment that holds its midpoint.
TIMELINE_WORDS = """
SELECT s.call_id, s.participant_id, s.role, s.start_ms, s.end_ms, s.model_version, s.label, s.word_valence,
       (SELECT string_agg(w.value ->> 2, ' ' ORDER BY (w.value ->> 0)::bigint)
        FROM utterance_pieces u CROSS JOIN LATERAL jsonb_array_elements(u.words) AS w(value)
        WHERE u.call_id = s.call_id AND u.participant_id = s.participant_id
          AND u.start_ms < s.end_ms AND u.end_ms > s.start_ms
          AND ((w.value ->> 0)::bigint + (w.value ->> 1)::bigint) / 2.0 >= s.start_ms
          AND ((w.value ->> 0)::bigint + (w.value ->> 1)::bigint) / 2.0 < s.end_ms) AS words
FROM emotion_segments s
"""
ANALYST_COLUMNS = ("call_id, participant_id, stream, seq, start_ms, end_ms, role, words_model, word_count, valence, "
                   "open_start, open_end, updated_at")


def _timeline(with_words: bool) -> str:
    script = op.get_context().script
    assert script is not None, "revisions run from their script folder"
    base, previous = script.get_revision("0008"), script.get_revision("0011")
    assert base is not None and previous is not None
    dims = previous.module.DIMS + (", s.word_valence" if with_words else "")
    return previous.module._edited(base.module.VIEWS["emotion_timeline"], "s.evidence\n", f"s.evidence{dims}\n")


def upgrade() -> None:
    op.add_column("segment_pieces", sa.Column("word_ms", sa.Integer(), server_default="0", nullable=False,
                                              comment="time of the words said in the piece"))
    op.add_column("segment_pieces", sa.Column("word_valence", sa.Float(), comment="their valence, -1 .. 1"))
    op.add_column("emotion_segments", sa.Column(
        "word_valence", sa.Float(),
        comment="valence of the words said in the segment, -1 unpleasant .. 1 pleasant (CALLSTREAM_WORDS)"))
    op.create_table(
        "utterance_pieces",
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("stream", sa.String(140), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=False),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("words_model", sa.String(128), nullable=False, comment="the words model's name/version"),
        sa.Column("word_count", sa.Integer(), nullable=False),
        sa.Column("valence", sa.Float(), nullable=False,
                  comment="-1 unpleasant .. 1 pleasant (VADER's compound score)"),
        sa.Column("text", sa.Text(), comment="as CALLSTREAM_TRANSCRIPTS keeps it; NULL: none"),
        sa.Column("words", postgresql.JSONB(astext_type=sa.Text()),
                  comment="[start_ms, end_ms, word] each; NULL: none"),
        sa.Column("open_start", sa.Boolean(), nullable=False,
                  comment="may continue the previous chunk's last utterance"),
        sa.Column("open_end", sa.Boolean(), nullable=False, comment="may continue in the next chunk"),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "participant_id", "stream", "seq", "start_ms"),
        comment="utterances as each chunk heard them; view utterances joins those a chunk cut")
    op.execute("CREATE OR REPLACE VIEW emotion_timeline AS " + _timeline(True))
    op.execute(f"CREATE VIEW utterances AS {UTTERANCES}")
    op.execute(f"CREATE VIEW utterance_valence AS {UTTERANCE_VALENCE}")
    op.execute(f"CREATE VIEW timeline_words AS {TIMELINE_WORDS}")
    op.execute(ROLE)
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON utterance_pieces TO callstream_writer")
    op.execute(f"GRANT SELECT ({ANALYST_COLUMNS}) ON utterance_pieces TO callstream_analyst")
    op.execute("GRANT SELECT ON utterance_valence TO callstream_analyst")
    op.execute("GRANT SELECT ON utterance_pieces, utterances, utterance_valence, timeline_words, calls, "
               "emotion_segments, emotion_timeline TO callstream_transcripts")


def downgrade() -> None:
    for view in ("timeline_words", "utterance_valence", "utterances"):
        op.execute(f"DROP VIEW {view}")
    op.execute("DROP VIEW emotion_timeline")
    op.execute("CREATE VIEW emotion_timeline AS " + _timeline(False))
    op.execute("GRANT SELECT ON emotion_timeline TO callstream_analyst")
    op.drop_table("utterance_pieces")
    op.drop_column("emotion_segments", "word_valence")
    op.drop_column("segment_pieces", "word_valence")
    op.drop_column("segment_pieces", "word_ms")
