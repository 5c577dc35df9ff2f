"""Lawful by default, on the real stack: media kept no longer than needed, erasure that sticks, and an
analyst role that reads the views but not the ledger."""

import os
import subprocess
import sys

import psycopg
import pytest
from botocore.exceptions import ClientError

from pipeline.contract import ChunkMeta
from pipeline.ingest.claimcheck import s3_client
from pipeline.ingest.producer import ChunkPublisher, publish_recording
from pipeline.settings import REPO_ROOT
from tests.e2e.helpers import query, wait_chunks
from tests.stack import wait_for

pytestmark = pytest.mark.stack


def _exists(settings, uri):
    bucket, key = uri[5:].split("/", 1)
    try:
        s3_client(settings).head_object(Bucket=bucket, Key=key)
        return True
    except ClientError:
        return False


def test_claim_checks_are_deleted_after_commit_and_forget_erases_for_good(stack, media):
    env, settings = stack.isolated("privacy")
    env["CALLSTREAM_INLINE_LIMIT_BYTES"] = "50000"   # every chunk through the claim check
    from pipeline.settings import Settings

    settings = Settings.from_env(env)
    worker = stack.start_worker(env, "privacy")
    try:
        sent = publish_recording(settings, media["call10"], "e2e-forget")
        assert all(m.claim_check for m in sent)
        wait_chunks(settings, "e2e-forget", len(sent))
        wait_for(lambda: not any(_exists(settings, m.claim_check) for m in sent), 30, "claim checks deleted")
        assert query(settings, "SELECT count(*) FROM emotion_segments WHERE call_id='e2e-forget'")[0][0] == 10

        out = subprocess.run([sys.executable, "-m", "pipeline.cli", "forget", "e2e-forget"], capture_output=True,
                             text=True, env={**os.environ, **env}, cwd=REPO_ROOT)
        assert out.returncode == 0, out.stderr
        assert "forgot call e2e-forget: 10 segment rows, 2 ledger rows, 1 call rows" in out.stdout
        for table in ("emotion_segments", "chunks", "calls"):
            assert query(settings, f"SELECT count(*) FROM {table} WHERE call_id='e2e-forget'")[0][0] == 0
        listed = s3_client(settings).list_objects_v2(Bucket=settings.claim_check_bucket, Prefix="calls/e2e-forget/")
        assert not listed.get("Contents")

        # A replay of the same chunk is refused: nothing of the call comes back.
        with ChunkPublisher(settings) as pub:
            pub.publish_raw(media["call10"].read_bytes()[:40000], b"e2e-forget",
                            ChunkMeta("e2e-forget", 0, 0, layout="customer").headers())
            pub.wait()
        wait_for(lambda: query(settings, "SELECT count(*) FROM chunks WHERE topic=:t AND status='erased'",
                               t=settings.chunks_topic)[0][0] == 1, 120, "the replay refused")
        for table in ("emotion_segments", "chunks", "calls"):
            assert query(settings, f"SELECT count(*) FROM {table} WHERE call_id='e2e-forget'")[0][0] == 0
        assert worker.poll() is None, stack.worker_log("privacy")
    finally:
        stack.stop_worker(worker)


def test_the_analyst_role_reads_views_but_not_the_ledger_and_cannot_write(stack):
    with psycopg.connect(stack.settings.db_url, autocommit=True) as conn:
        conn.execute("SET ROLE callstream_analyst")
        conn.execute("SELECT count(*) FROM call_summary").fetchone()
        conn.execute("SELECT count(*) FROM emotion_timeline").fetchone()
        for sql in ("SELECT error_detail FROM chunks LIMIT 1",
                    "INSERT INTO calls (call_id) VALUES ('analyst-was-here')",
                    "UPDATE emotion_segments SET label = 'happy'",
                    "DELETE FROM calls"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
