"""The README's examples run as written (addresses and topic names swapped for the test stack's)."""

import re
import subprocess
import sys

import pytest
from sqlalchemy import text

from pipeline.contract import parse
from pipeline.settings import REPO_ROOT
from pipeline.store.db import sync_engine
from tests.stack import read_topic

pytestmark = pytest.mark.stack

README = (REPO_ROOT / "README.md").read_text()


def test_every_sql_example_runs_against_the_schema(stack):
    blocks = re.findall(r"^```sql\n(.*?)^```", README, re.M | re.S)
    assert len(blocks) >= 4
    engine = sync_engine(stack.settings)
    try:
        with engine.connect() as conn:
            for sql in blocks:
                conn.execute(text(sql.strip().rstrip(";")))
    finally:
        engine.dispose()


def test_the_claim_check_upload_example_stores_the_object(stack, tmp_path):
    import shutil

    from pipeline.ingest.claimcheck import s3_client

    aws = shutil.which("aws")
    if aws is None or subprocess.run([aws, "--version"], capture_output=True).returncode != 0:
        pytest.skip("no working AWS CLI on this machine: the README's `aws s3 cp` line cannot be run")
    (command,) = re.findall(r"^(AWS_ACCESS_KEY_ID=.*?\.mkv)$", README, re.M | re.S)
    settings = stack.settings
    command = command.replace("http://127.0.0.1:8333", settings.s3_url)
    (tmp_path / "chunk7.mkv").write_bytes(b"a chunk's bytes")
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    body = s3_client(settings).get_object(Bucket="callstream-chunks", Key="calls/c-42/000007.mkv")["Body"].read()
    assert body == b"a chunk's bytes"


def test_the_confluent_kafka_example_publishes_a_chunk_the_contract_accepts(stack):
    env, settings = stack.isolated("readme")
    (script,) = re.findall(r"^python - <<'PY'\n(.*?)^PY$", README, re.M | re.S)
    assert "localhost:9092" in script and '"callstream.chunks"' in script
    script = script.replace("localhost:9092", settings.bootstrap_servers).replace(
        '"callstream.chunks"', f'"{settings.chunks_topic}"')
    from pipeline.ingest.topics import ensure_topics

    ensure_topics(settings)
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (record,) = read_topic(settings, settings.chunks_topic, expect=1)
    meta = parse(list(record.headers), record.key)
    assert (meta.call_id, meta.seq, meta.start_ms, meta.claim_check) == \
        ("c-42", 7, 35000, "s3://callstream-chunks/calls/c-42/000007.mkv")
    # On the partition `callstream produce` (kafka-python, the Java client's murmur2) gives the call.
    from kafka.partitioner.default import murmur2

    assert record.partition == (murmur2(b"c-42") & 0x7FFFFFFF) % settings.partitions
