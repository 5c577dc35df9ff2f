"""Alembic keeps the schema's version: a worker's login (callstream_writer) reads it at start

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

Databases built by the hand-written migrations keep their schema_migrations table (an older worker
started against this database still finds its version there); nothing writes to it any more.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("GRANT SELECT ON alembic_version TO callstream_writer")


def downgrade() -> None:
    op.execute("REVOKE SELECT ON alembic_version FROM callstream_writer")
