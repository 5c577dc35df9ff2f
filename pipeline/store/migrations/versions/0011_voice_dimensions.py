"""voice net valence, arousal, dominance stored; arousal_source; agreeing_seconds 0 when nothing agrees

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

Both views change by one clause each, written as an edit of the baseline's body (so the full text lives
in one place) and checked to apply: CREATE OR REPLACE VIEW may only append columns, which these do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

DIMS = ", s.arousal_source, s.voice_valence, s.voice_arousal, s.voice_dominance"
AGREEING = ("sum(a.end_ms - a.start_ms) FILTER (WHERE a.label IS NOT NULL AND a.label = b.label) / 1000.0\n"
            "           AS agreeing_seconds")
AGREEING_0 = ("coalesce(sum(a.end_ms - a.start_ms) FILTER (WHERE a.label IS NOT NULL AND a.label = b.label), 0)\n"
              "           / 1000.0 AS agreeing_seconds")


def _baseline_views() -> dict[str, str]:
    script = op.get_context().script
    assert script is not None, "revisions run from their script folder"
    baseline = script.get_revision("0008")
    assert baseline is not None
    return baseline.module.VIEWS


def _edited(body: str, old: str, new: str) -> str:
    if body.count(old) != 1:
        raise RuntimeError(f"revision 0011: the baseline view no longer holds {old!r}")
    return body.replace(old, new)


def upgrade() -> None:
    op.add_column("segment_pieces", sa.Column(
        "voice_dims", sa.ARRAY(sa.Float()),
        comment="a dimensional voice net's valence, arousal, dominance over the piece's speech"))
    op.add_column("emotion_segments", sa.Column(
        "arousal_source", sa.String(16),
        comment="voice_net (a dimensional voice net's arousal) | prosody (energy, pitch, rate)"))
    for name, comment in (("voice_valence", "valence over the speech, -1 unpleasant .. 1 pleasant"),
                          ("voice_arousal", "arousal over the speech, 0 calm .. 1 excited"),
                          ("voice_dominance", "dominance over the speech, 0 .. 1, where it answers one")):
        op.add_column("emotion_segments", sa.Column(name, sa.Float(), comment=f"a dimensional voice net's {comment}"))
    op.alter_column("emotion_segments", "arousal", existing_type=sa.Float(),
                    comment="arousal 0..1 when speech was found; arousal_source says whose",
                    existing_comment="prosodic arousal 0..1 when speech was found")
    # Until now every arousal was the prosodic estimate.
    op.execute("UPDATE emotion_segments SET arousal_source = 'prosody' WHERE arousal IS NOT NULL")
    views = _baseline_views()
    op.execute("CREATE OR REPLACE VIEW emotion_timeline AS "
               + _edited(views["emotion_timeline"], "s.evidence\n", f"s.evidence{DIMS}\n"))
    op.execute("CREATE OR REPLACE VIEW model_comparison AS "
               + _edited(views["model_comparison"], AGREEING, AGREEING_0))


def downgrade() -> None:
    views = _baseline_views()
    op.execute("CREATE OR REPLACE VIEW model_comparison AS " + views["model_comparison"])
    op.execute("DROP VIEW emotion_timeline")
    op.execute("CREATE VIEW emotion_timeline AS " + views["emotion_timeline"])
    op.execute("GRANT SELECT ON emotion_timeline TO callstream_analyst")
    op.alter_column("emotion_segments", "arousal", existing_type=sa.Float(),
                    comment="prosodic arousal 0..1 when speech was found")
    for name in ("voice_dominance", "voice_arousal", "voice_valence", "arousal_source"):
        op.drop_column("emotion_segments", name)
    op.drop_column("segment_pieces", "voice_dims")
