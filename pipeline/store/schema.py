"""Schema versions as a deploy step: `callstream db upgrade` applies the Alembic revisions (it needs DDL
rights); a worker only checks that the database is at the version it was built for, so it can run as
a login of `callstream_writer`, which has none.

Revisions are numbered (`0010`), so a version is a number in messages and in `db status`. Databases
built by the hand-written migrations that came before Alembic (their `schema_migrations` table at 8
or 9) are stamped at that revision, not rebuilt, and upgraded from there.

A database ahead of the worker (a newer release migrated it during a rolling deploy) is accepted: the
revisions only add tables, columns and views, so an older worker's reads and writes still hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

LOCK_KEY = 0x63616C6C  # "call": serialises concurrent upgrades
LEGACY_TABLE = "schema_migrations"   # the hand-written migrations' bookkeeping (versions 1..9)
LEGACY_STAMPABLE = (8, 9)            # the versions the Alembic revisions start from
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class SchemaMismatch(Exception):
    """The database is not at the schema version this code needs."""


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration without an ini file: the script folder ships inside the package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def revisions() -> dict[int, str]:
    """Every revision's number and its one-line description, oldest first."""
    scripts = ScriptDirectory.from_config(config())
    found = {int(s.revision): (s.doc or "").strip() for s in scripts.walk_revisions()}
    return dict(sorted(found.items()))


def required() -> int:
    return max(revisions())


@dataclass(frozen=True)
class SchemaState:
    version: int | None   # the database's revision; None: never migrated
    legacy: bool = False  # only the hand-written migrations' table: stamped on the next upgrade
    required: int = field(default_factory=required)

    @property
    def ready(self) -> bool:
        return not self.legacy and self.version is not None and self.version >= self.required

    @property
    def pending(self) -> list[int]:
        have = self.version or 0
        return [v for v in revisions() if v > have]


def state(conn: Connection) -> SchemaState:
    if conn.execute(text("SELECT to_regclass('alembic_version')")).scalar_one() is not None:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return SchemaState(int(version) if version is not None else None)
    if conn.execute(text(f"SELECT to_regclass('{LEGACY_TABLE}')")).scalar_one() is not None:
        return SchemaState(conn.execute(text(f"SELECT max(version) FROM {LEGACY_TABLE}")).scalar_one(), legacy=True)
    return SchemaState(None)


def require(conn: Connection, where: str) -> SchemaState:
    """The state, or SchemaMismatch with the command that fixes it."""
    s = state(conn)
    if not s.ready:
        have = "no callstream schema" if s.version is None else f"schema version {s.version}"
        raise SchemaMismatch(f"the database at {where} has {have}; this worker needs version {s.required}: "
                             "run `callstream db upgrade` (with a login that may create tables) first")
    return s


def upgrade(conn: Connection) -> list[int]:
    """Bring the database to the newest revision inside the caller's transaction; returns the revisions
    applied now. A pre-Alembic database is stamped at its version first (its tables are already there)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    before = state(conn)
    cfg = config(conn)
    if before.legacy:
        if before.version not in LEGACY_STAMPABLE:
            raise SchemaMismatch(f"schema version {before.version} predates the versions this release upgrades "
                                 f"from ({', '.join(map(str, LEGACY_STAMPABLE))}): upgrade with the release "
                                 "that wrote it first")
        command.stamp(cfg, f"{before.version:04d}")
    command.upgrade(cfg, "head")
    after = state(conn).version or 0
    return [v for v in revisions() if (before.version or 0) < v <= after]
