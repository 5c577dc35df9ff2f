"""Schema versions as a deploy step: `callstream db upgrade` applies the migrations (it needs DDL
rights); a worker only checks that the database is at the version it was built for, so it can run as
a login of `callstream_writer`, which has none.

A database ahead of the worker (a newer release migrated it during a rolling deploy) is accepted: the
migrations only add tables, columns and views, so an older worker's reads and writes still hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from pipeline.store.migrations import MIGRATIONS

REQUIRED = max(v for v, _, _ in MIGRATIONS)


class SchemaMismatch(Exception):
    """The database is not at the schema version this code needs."""


@dataclass(frozen=True)
class SchemaState:
    version: int | None   # the highest applied migration; None: never migrated
    required: int = REQUIRED

    @property
    def ready(self) -> bool:
        return self.version is not None and self.version >= self.required

    @property
    def pending(self) -> list[int]:
        have = self.version or 0
        return [v for v, _, _ in MIGRATIONS if v > have]


def state(conn: Connection) -> SchemaState:
    exists = conn.execute(text("SELECT to_regclass('schema_migrations')")).scalar_one()
    if exists is None:
        return SchemaState(None)
    return SchemaState(conn.execute(text("SELECT max(version) FROM schema_migrations")).scalar_one())


def require(conn: Connection, where: str) -> SchemaState:
    """The state, or SchemaMismatch with the command that fixes it."""
    s = state(conn)
    if not s.ready:
        have = "no callstream schema" if s.version is None else f"schema version {s.version}"
        raise SchemaMismatch(f"the database at {where} has {have}; this worker needs version {s.required}: "
                             "run `callstream db upgrade` (with a login that may create tables) first")
    return s
