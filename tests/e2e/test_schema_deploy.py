"""Migrations are a deploy step: `callstream db upgrade` applies them, a worker runs as a login of
`callstream_writer` (no DDL rights), and a worker refuses a database without its schema with the
command that fixes it."""

import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from sqlalchemy.engine import make_url

from pipeline.ingest.producer import publish_recording
from pipeline.settings import REPO_ROOT, Settings
from tests.e2e.helpers import wait_chunks

pytestmark = pytest.mark.stack


def _cli(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=REPO_ROOT, timeout=timeout)


def test_a_worker_logged_in_as_a_writer_processes_calls(stack, media):
    env, settings = stack.isolated("writer")
    login = f"cs_writer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {login} LOGIN PASSWORD 'writer-pw'")
    worker = None
    try:
        out = _cli(env, "db", "upgrade", "--grant-writer", login)
        assert out.returncode == 0, out.stderr
        assert f"{login} is a member of callstream_writer" in out.stdout
        writer_url = make_url(settings.db_url).set(username=login, password="writer-pw")
        writer_env = {**env, "DATABASE_URL": writer_url.render_as_string(hide_password=False)}
        with psycopg.connect(writer_env["DATABASE_URL"], autocommit=True) as conn:   # no DDL rights
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("ALTER TABLE calls ADD COLUMN ddl_was_here integer")
        worker = stack.start_worker(writer_env, "writer")
        publish_recording(Settings.from_env(writer_env), media["call10"], "e2e-writer")
        wait_chunks(settings, "e2e-writer", 2)
        assert worker.poll() is None, stack.worker_log("writer")
    finally:
        if worker is not None:
            stack.stop_worker(worker)
        with psycopg.connect(settings.db_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {login}")


def test_a_worker_refuses_a_database_without_its_schema_and_says_what_to_run(stack):
    env, settings = stack.isolated("noschema")
    name = f"cs_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.db_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        empty = {**env, "DATABASE_URL": make_url(settings.db_url).set(database=name).render_as_string(
            hide_password=False)}
        out = _cli(empty, "worker")
        assert out.returncode == 2 and "callstream db upgrade" in out.stderr, out.stderr
        assert "no callstream schema" in out.stderr
        status = _cli(empty, "db", "status")
        assert status.returncode == 1 and "pending" in status.stdout
        assert _cli(empty, "db", "upgrade").returncode == 0
        assert _cli(empty, "db", "status").returncode == 0
    finally:
        with psycopg.connect(settings.db_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
