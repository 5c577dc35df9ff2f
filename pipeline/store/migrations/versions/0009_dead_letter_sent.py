"""chunks.dead_lettered_at: a failed row is written before its dead letter is sent, and marked once the broker has it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column(
        "dead_lettered_at", sa.DateTime(timezone=True), nullable=True,
        comment="when a failed chunk's dead letter was acknowledged by the broker; NULL while it is still to be "
                "sent (the row is written first)"))
    # Before this revision the dead letter went out before the failed row was written: every such row was sent.
    op.execute("UPDATE chunks SET dead_lettered_at = processed_at WHERE status = 'failed'")
    op.create_index("chunks_dead_letter_unsent", "chunks", ["topic", "partition"],
                    postgresql_where=sa.text("status = 'failed' AND dead_lettered_at IS NULL"))


def downgrade() -> None:
    op.drop_index("chunks_dead_letter_unsent", table_name="chunks")
    op.drop_column("chunks", "dead_lettered_at")
