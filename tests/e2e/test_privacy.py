"""Lawful by default, on the real stack: media kept no longer than needed, erasure that sticks, and an
analyst role that reads the views but not the ledger."""

import os
import re
import subprocess
import sys

import psycopg
import pytest
from botocore.exceptions import ClientError

from pipeline.contract import ChunkMeta
from pipeline.ingest.claimcheck import s3_client
from pipeline.ingest.producer import ChunkPublisher, publish_recording
from pipeline.settings import REPO_ROOT
from tests.e2e.helpers import execute, query, wait_chunks
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
        wait_for(lambda: query(settings, "SELECT count(*) FROM chunks WHERE topic=:t AND status='refused'",
                               t=settings.chunks_topic)[0][0] == 1, 120, "the replay refused")
        for table in ("emotion_segments", "calls"):
            assert query(settings, f"SELECT count(*) FROM {table} WHERE call_id='e2e-forget'")[0][0] == 0
        assert query(settings, "SELECT status, error_reason, stream, seq, claim_check FROM chunks "
                               "WHERE call_id='e2e-forget'") == [("refused", "call_erased", "", None, None)]
        # The timeline says why there is nothing, instead of "no segments yet".
        shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "timeline", "e2e-forget"], capture_output=True,
                               text=True, env={**os.environ, **env}, cwd=REPO_ROOT)
        assert shown.returncode == 1 and "call 'e2e-forget' was erased by `callstream forget`" in shown.stderr
        assert "1 chunk(s) arrived since and were refused" in shown.stderr, shown.stderr
        # status says so too, and --follow on an erased call says why instead of waiting.
        st = subprocess.run([sys.executable, "-m", "pipeline.cli", "status"], capture_output=True, text=True,
                            env={**os.environ, **env}, cwd=REPO_ROOT)
        # (other tests share the database: at least this one)
        assert re.search(r"chunks refused because their call was erased \(`callstream forget`\): [1-9]\d* of "
                         r"[1-9]\d* call\(s\), the last at ", st.stdout), st.stdout
        fol = subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", str(media["call10"]), "--call-id",
                              "e2e-forget", "--layout", "customer", "--follow", "--follow-timeout", "60"],
                             capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO_ROOT, timeout=50)
        assert fol.returncode == 1 and "error: call 'e2e-forget' was erased" in fol.stderr, fol.stderr
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


def test_retention_apply_deletes_media_that_a_failed_delete_left_behind(stack):
    """The object store was down when the chunks committed (or the worker died between its commit and
    the delete): the done chunks still name their objects, and `retention apply` deletes them."""
    from pipeline.ingest.claimcheck import ClaimCheckStore

    env, settings = stack.isolated("leftover")
    store = ClaimCheckStore(settings)
    uris = [store.put("e2e-leftover", seq, b"media bytes %d" % seq) for seq in range(3)]
    gone_already = store.put("e2e-leftover", 3, b"deleted by the worker")
    store.delete(gone_already)
    topic = settings.chunks_topic
    for seq, uri in enumerate([*uris, gone_already]):
        execute(settings, "INSERT INTO chunks (topic, partition, \"offset\", worker, size_bytes, call_id, stream, "
                        "seq, claim_check, status, segments, attempts) VALUES (:t, 0, :o, 'w:1', 10, 'e2e-leftover', "
                        "'', :o, :u, 'done', 5, 1)", t=topic, o=seq, u=uri)
    assert all(_exists(settings, u) for u in uris)

    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "retention", "apply"], capture_output=True,
                         text=True, env={**os.environ, **env}, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    # Other tests' done chunks share the database: at least this test's three, and its one already gone.
    found = re.search(r"media of done chunks: (\d+) claim-check objects deleted \((\d+) were gone already\)",
                      out.stdout)
    assert found and int(found[1]) >= 3 and int(found[2]) >= 1, out.stdout
    assert not any(_exists(settings, u) for u in uris)
    rows = query(settings, "SELECT claim_check, note FROM chunks WHERE call_id='e2e-leftover'")
    assert len(rows) == 4 and all(r[0] is None and "media deleted" in r[1] for r in rows)
    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "retention", "apply"], capture_output=True,
                           text=True, env={**os.environ, **env}, cwd=REPO_ROOT)
    assert "media of done chunks: 0 claim-check objects deleted (0 were gone already)" in again.stdout


def test_forgetting_a_call_nothing_is_known_of_needs_force(stack):
    """A typo in `forget` must not silently write a permanent tombstone for a call that never existed."""
    env, settings = stack.isolated("forget-unknown")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "forget", "e2e-never-was"], capture_output=True,
                         text=True, env={**os.environ, **env}, cwd=REPO_ROOT)
    assert out.returncode == 1 and "nothing is stored of call 'e2e-never-was'" in out.stderr and "--force" in out.stderr
    assert query(settings, "SELECT count(*) FROM erasures WHERE call_id = 'e2e-never-was'")[0][0] == 0
    forced = subprocess.run([sys.executable, "-m", "pipeline.cli", "forget", "e2e-never-was", "--force"],
                            capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO_ROOT)
    assert forced.returncode == 0, forced.stderr
    assert query(settings, "SELECT count(*) FROM erasures WHERE call_id = 'e2e-never-was'")[0][0] == 1
