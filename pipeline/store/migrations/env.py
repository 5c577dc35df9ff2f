"""How Alembic reaches the database: on the connection `pipeline.store.schema` hands over (inside its
transaction and advisory lock), or, from the `alembic` command line, on the database the settings name."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from pipeline.store.models import Base
from pipeline.store.schema import LEGACY_TABLE, LOCK_KEY


def _include(obj: Any, name: str | None, kind: str, reflected: bool, _compare_to: Any) -> bool:
    # The hand-written migrations' bookkeeping stays in databases they built; it is no model's table.
    return not (kind == "table" and name == LEGACY_TABLE)


def _run(conn: Connection) -> None:
    context.configure(connection=conn, target_metadata=Base.metadata, include_object=_include,
                      compare_server_default=True)
    with context.begin_transaction():
        # Many workers' deploy jobs may start at once; one migrates, the others then find nothing to do.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("callstream's migrations run online only: `callstream db upgrade`")
given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    from pipeline.settings import Settings
    from pipeline.store.db import sync_engine

    engine = sync_engine(Settings.from_env())
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()
