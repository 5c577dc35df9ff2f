"""Daemon bookkeeping for the embedded stack: pid files and logs under one state folder.

Each service is a plain child process detached into its own session, so `callstream down` (or a test
fixture) can stop it later from another process by its pid file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


class ServiceError(RuntimeError):
    pass


def _pidfile(state: Path, name: str) -> Path:
    return state / "run" / f"{name}.pid"


def log_path(state: Path, name: str) -> Path:
    return state / "logs" / f"{name}.log"


def running_pid(state: Path, name: str) -> int | None:
    path = _pidfile(state, name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    # A zombie (exited, not yet reaped by its parent) still answers kill(pid, 0).
    try:
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return None
    except OSError:
        pass
    return pid


def start(state: Path, name: str, argv: list[str], env: dict[str, str] | None = None,
          cwd: Path | None = None, user: str | None = None) -> int:
    pid = running_pid(state, name)
    if pid:
        return pid
    (state / "run").mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    log = open(log_path(state, name), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True, **as_user(user))
    _pidfile(state, name).write_text(str(proc.pid))
    return proc.pid


def start_worker_process(state: Path, log_name: str, env: dict[str, str] | None = None,
                         cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A `callstream worker` in its own session, logging to state/logs/<log_name>.log. The parent's
    handle on the log file is closed at once: the child keeps its own."""
    from pipeline.settings import REPO_ROOT

    (state / "logs").mkdir(parents=True, exist_ok=True)
    with open(state / "logs" / f"{log_name}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                cwd=cwd or REPO_ROOT, start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> float:
    """SIGTERM, wait, then SIGKILL the whole session; returns the seconds it took."""
    start = time.time()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return time.time() - start


def as_user(user: str | None) -> dict:
    """subprocess arguments that drop to `user` entirely: uid, primary group and no root groups."""
    if user is None:
        return {}
    import pwd

    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def stop(state: Path, name: str, timeout: float = 20.0) -> bool:
    pid = running_pid(state, name)
    if not pid:
        _pidfile(state, name).unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.time() + timeout
    while time.time() < deadline and running_pid(state, name):
        time.sleep(0.2)
    if running_pid(state, name):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _pidfile(state, name).unlink(missing_ok=True)
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], what: str, timeout: float, state: Path | None = None,
               name: str | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        if state is not None and name is not None and not running_pid(state, name):
            raise ServiceError(f"{what}: process exited; see {log_path(state, name)}:\n{tail(state, name)}")
        time.sleep(0.3)
    raise ServiceError(f"{what}: not ready after {timeout:.0f}s" +
                       (f"; see {log_path(state, name)}:\n{tail(state, name)}" if state and name else ""))


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def tail(state: Path, name: str, lines: int = 15) -> str:
    try:
        return "\n".join(log_path(state, name).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def free_port() -> int:
    """A port nothing listens on now (for a worker's metrics in benchmarks and tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
