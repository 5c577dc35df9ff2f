"""`callstream db`: the schema as a deploy step (store/schema.py)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from pipeline.cli.base import Handler
from pipeline.settings import Settings, SettingsError, mask

LOGIN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def grant_writer(conn: Any, login: str) -> None:
    """GRANT callstream_writer TO login (a name, checked: it is spliced into the statement)."""
    from sqlalchemy import text

    if not LOGIN.fullmatch(login):
        raise SettingsError(f"--grant-writer {login!r}: a Postgres login name ([a-z_][a-z0-9_]*, up to 63)")
    if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r AND rolcanlogin"), {"r": login}).first() is None:
        raise SettingsError(f"--grant-writer {login}: no such login role; create it first (CREATE ROLE {login} "
                            "LOGIN PASSWORD '...')")
    conn.exec_driver_sql(f'GRANT callstream_writer TO "{login}"')


def register(sub: Any) -> dict[str, Handler]:
    db = sub.add_parser("db", help="`db upgrade` applies the schema revisions; `db status` shows the version")
    db.add_argument("db_cmd", choices=["upgrade", "status"], metavar="upgrade|status",
                    help="upgrade: apply the pending schema revisions; status: the version and what is pending")
    db.add_argument("--grant-writer", metavar="LOGIN", action="append", default=[],
                    help="with upgrade: make this existing login a member of callstream_writer (what a worker "
                         "needs: no DDL rights); repeatable")
    return {"db": run}


def run(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.store.db import sync_engine
    from pipeline.store.schema import revisions, state, upgrade

    engine = sync_engine(settings)
    where = mask("database_url", settings.db_url)
    try:
        if args.db_cmd == "upgrade":
            with engine.begin() as conn:
                applied = upgrade(conn)
                for login in args.grant_writer:
                    grant_writer(conn, login)
            names = revisions()
            for v in applied:
                print(f"  applied {v}: {names[v]}")
            with engine.connect() as conn:
                now = state(conn)
            print(f"{where}: schema version {now.version}" + ("" if applied else " (already up to date)"))
            for login in args.grant_writer:
                print(f"  {login} is a member of callstream_writer")
            return 0
        with engine.connect() as conn:
            now = state(conn)
        print(f"{where}: schema version {now.version if now.version is not None else 'none'}; "
              f"this release needs {now.required}" + ("" if now.ready else
                                                      f"; pending {now.pending}: run `callstream db upgrade`"))
        return 0 if now.ready else 1
    finally:
        engine.dispose()
