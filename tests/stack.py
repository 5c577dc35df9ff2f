"""The real embedded stack for integration and end-to-end tests, isolated from any running demo:
its own state folder, free ports, and its own database (created on DATABASE_URL's server when set)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from callstream_lab.stack import broker, control, objectstore, postgres, triton
from callstream_lab.stack.procs import free_port, start_worker_process, stop_process
from pipeline.settings import Settings


def free_base(span: int = 10005) -> int:
    """A port p with p..p+3 and p+10001..p+10004 free (SeaweedFS derives its other ports from it)."""
    for _ in range(50):
        p = free_port()
        if p + span > 65000:
            continue
        ports = [p + i for i in range(4)] + [p + 10001 + i for i in range(4)]
        ok = True
        for q in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
                    break
        if ok:
            return p
    raise RuntimeError("no free port range for SeaweedFS")


@dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    workers: list[subprocess.Popen] = field(default_factory=list)
    admin_db_url: str | None = None
    db_name: str | None = None

    def with_env(self, **over: str) -> tuple[dict[str, str], Settings]:
        env = {**self.env, **over}
        return env, Settings.from_env(env)

    def isolated(self, name: str) -> tuple[dict[str, str], Settings]:
        """Own topics and consumer group for one test, so tests never see each other's messages."""
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        return self.with_env(CALLSTREAM_CHUNKS_TOPIC=f"chunks.{tag}", CALLSTREAM_DLQ_TOPIC=f"dlq.{tag}",
                             CALLSTREAM_ALERTS_TOPIC=f"alerts.{tag}", CALLSTREAM_APP_ID=f"cs-{tag}",
                             CALLSTREAM_METRICS_PORT="0")

    def start_worker(self, env: dict[str, str], name: str) -> subprocess.Popen:
        proc = start_worker_process(Settings.from_env(env).state_dir, f"worker-{name}", env)
        self.workers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        stop_process(proc, timeout)

    def worker_log(self, name: str) -> str:
        return (self.settings.state_dir / "logs" / f"worker-{name}.log").read_text(errors="replace")[-4000:]


def start_stack(state_dir: Path) -> Stack:
    env = {
        "CALLSTREAM_STATE_DIR": str(state_dir),
        "CALLSTREAM_METRICS_PORT": "0",  # workers of a test share the machine: metrics only where asked
        "CALLSTREAM_KAFKA_PORT": str(free_port()),
        "CALLSTREAM_S3_PORT": str(free_base()),
        "CALLSTREAM_TRITON_HTTP_PORT": str(free_port()),
        "CALLSTREAM_TRITON_GRPC_PORT": str(free_port()),
        "CALLSTREAM_TRITON_METRICS_PORT": str(free_port()),
        "CALLSTREAM_PG_PORT": str(free_port()),
        "CALLSTREAM_PARTITIONS": "4",
        "CALLSTREAM_RETRY_MAX_S": "2",
    }
    stack = Stack(env, Settings.from_env(env))
    admin = os.environ.get("DATABASE_URL")
    if admin:
        import psycopg

        stack.admin_db_url, stack.db_name = admin, f"callstream_test_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{stack.db_name}"')
        base = admin.rsplit("/", 1)[0]
        env["DATABASE_URL"] = f"{base}/{stack.db_name}"
    else:
        env["DATABASE_URL"] = ""
    stack.settings = Settings.from_env(env)
    s = stack.settings
    try:
        objectstore.start(s)
        broker.start(s)
        postgres.start(s)
        triton.start(s)
        if not admin:
            env["DATABASE_URL"] = s.db_url
            stack.settings = Settings.from_env(env)
        from pipeline.store.db import ensure_schema

        ensure_schema(stack.settings)
    except BaseException:
        stop_stack(stack)  # a failed start must not leave the services it did start running
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    for w in stack.workers:
        if w.poll() is None:
            stack.stop_worker(w, timeout=10)
    s = stack.settings
    try:
        control.down(s, log=lambda _: None)   # side by side, as `callstream down` does
    except Exception:  # a service that will not stop must not keep the database below from being dropped
        pass
    if stack.admin_db_url and stack.db_name:
        import psycopg

        with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{stack.db_name}" WITH (FORCE)')


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5, log=None):
    """Poll until `predicate` is truthy; on timeout the failure carries the tail of `log()` (a worker's
    log, say), so a run that fails on CI says why without a rerun."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    tail = f"\n--- log tail ---\n{str(log())[-4000:]}" if log is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){tail}")


def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 30) -> list:
    """All messages of a topic from the beginning, waiting for `expect` of them."""
    from pipeline.ingest.topics import read_from_start

    return read_from_start(settings, topic, expect=expect, timeout=timeout)
