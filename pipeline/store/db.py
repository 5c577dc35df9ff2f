"""Engines (psycopg 3 under SQLAlchemy) and schema setup."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipeline.settings import Settings, mask
from pipeline.store.schema import SchemaState, require, upgrade

CONNECT_TIMEOUT_S = 5   # an unreachable host fails in seconds, not after the TCP default


def sync_engine(settings: Settings) -> Engine:
    return create_engine(settings.sqlalchemy_url, pool_pre_ping=True,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S})


# A worker's transaction runs its statements back to back (milliseconds apart). One that sits idle for
# this long belongs to a process that was stopped (SIGSTOP, a VM pause) in the middle of it: Postgres
# ends it, so the call's advisory lock it holds does not stall the worker that took its partitions.
IDLE_IN_TRANSACTION_S = 10
# That timeout only runs between statements. A process stopped in the middle of a pipelined batch (its
# statements sent, the Sync not yet) leaves the server reading the next message, not idle, and the lock
# was held for as long as the pause lasted (seen: 231 s under fault injection). Postgres 17 and later
# bound the whole transaction: a worker's commit takes milliseconds, a 45-minute single-chunk call's a
# few seconds, so one minute only ever ends a transaction whose process has stopped.
TRANSACTION_TIMEOUT_S = 60


def async_engine(settings: Settings, pool_size: int = 5) -> AsyncEngine:
    engine = create_async_engine(settings.sqlalchemy_url, pool_size=pool_size, max_overflow=pool_size,
                                 pool_pre_ping=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _limit_idle_transactions(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S}s'")
        if dbapi_connection.info.server_version >= 170000:
            cursor.execute(f"SET transaction_timeout = '{TRANSACTION_TIMEOUT_S}s'")
        cursor.close()
        dbapi_connection.autocommit = autocommit

    return engine


def require_schema(settings: Settings) -> SchemaState:
    """The database's schema state, or SchemaMismatch naming the command that fixes it (no DDL here)."""
    engine = sync_engine(settings)
    try:
        with engine.connect() as conn:
            return require(conn, mask("database_url", settings.db_url))
    finally:
        engine.dispose()


def ensure_schema(settings: Settings) -> list[int]:
    """Apply the missing revisions (`callstream db upgrade`, and the embedded stack's `up`)."""
    engine = sync_engine(settings)
    try:
        with engine.begin() as conn:
            return upgrade(conn)
    finally:
        engine.dispose()
