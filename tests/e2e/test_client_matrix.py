"""The client matrix of the README (§ Clients), checked on both brokers: each client publishes one
chunk as its users configure it, and the README's column for the broker says what came of it."""

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pipeline.contract import ChunkMeta
from pipeline.ingest.topics import ensure_topics
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import REPO_ROOT
from tests.e2e.helpers import query, wait_chunks

pytestmark = pytest.mark.stack

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
COLUMN = {"tansu": "tansu", "kafka": "Apache Kafka 4.4"}


def headers(call_id: str) -> list[tuple[str, bytes]]:
    return ChunkMeta(call_id, 0, 0, duration_ms=5000, end_of_call=True).headers()


def kafka_python(settings, call_id, payload, mode):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", max_request_size=4_000_000,
                      compression_type=None if mode == "none" else mode)
    p.send(settings.chunks_topic, key=call_id.encode(), value=payload, headers=headers(call_id)).get(30)
    p.close()


def aiokafka(settings, call_id, payload, mode):
    from aiokafka import AIOKafkaProducer

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                             enable_idempotence=mode == "idempotent", max_request_size=4_000_000,
                             compression_type=None if mode in ("none", "idempotent") else mode)
        await p.start()
        try:
            await p.send_and_wait(settings.chunks_topic, key=call_id.encode(), value=payload,
                                  headers=headers(call_id))
        finally:
            await p.stop()
    asyncio.run(go())


def confluent(settings, call_id, payload, mode):
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": settings.bootstrap_servers, "acks": "all", "enable.idempotence": True,
            "message.max.bytes": 4_000_000, "partitioner": "murmur2_random"}
    if mode in CODECS:
        conf["compression.type"] = mode
        p = Producer(conf)
        p.produce(settings.chunks_topic, key=call_id.encode(), value=payload, headers=headers(call_id))
        assert p.flush(30) == 0
        return
    p = Producer({**conf, "transactional.id": f"recorder-{uuid.uuid4().hex[:8]}"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(settings.chunks_topic, key=call_id.encode(), value=payload, headers=headers(call_id))
    p.flush(30)
    if mode == "transaction, committed":
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


def kafkajs(settings, call_id, payload, mode, npm_dir: Path, payload_file: Path):
    hdrs = {k: v.decode() for k, v in headers(call_id)}
    done = subprocess.run(["node", str(REPO_ROOT / "tests" / "e2e" / "kafkajs_publish.cjs"), settings.bootstrap_servers,
                           settings.chunks_topic, call_id, str(payload_file), mode, json.dumps(hdrs)],
                          capture_output=True, text=True, timeout=120, env={"NODE_PATH": str(npm_dir / "node_modules"),
                                                                           "PATH": "/usr/bin:/usr/local/bin"})
    assert done.returncode == 0, done.stderr[-2000:]


CASES = ([("kafka-python", m) for m in CODECS] + [("aiokafka", m) for m in CODECS] + [("aiokafka", "idempotent")] +
         [("confluent-kafka", m) for m in CODECS] +
         [("confluent-kafka", "transaction, committed"), ("confluent-kafka", "transaction, aborted")] +
         [("kafkajs", "none"), ("kafkajs", "gzip"), ("kafkajs", "idempotent")])
REFUSED = "publish refused"   # the README cell of a client the broker refuses (the test expects the refusal)


def readme_matrix() -> dict[tuple[str, str], dict[str, str]]:
    """The README's client table: (client, mode) -> {broker column: outcome}."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- client matrix: tests/e2e/test_client_matrix.py -->", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.strip().splitlines()]
    head, body = rows[0], rows[2:]
    return {(r[0].strip("`"), r[1]): dict(zip(head[2:], r[2:], strict=True)) for r in body}


@pytest.fixture(scope="module")
def npm_dir(tmp_path_factory):
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    d = tmp_path_factory.mktemp("kafkajs")
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "kafkajs@2"], cwd=d, capture_output=True,
                          text=True, timeout=300)
    return d if done.returncode == 0 else None


def test_every_client_of_the_readme_matrix_as_it_says(any_stack, media, npm_dir, tmp_path):
    stack = any_stack
    env, settings = stack.isolated("matrix")
    ensure_topics(settings)
    payload_file = cut(ffmpeg_exe(), media["call10"], 5.0)[0].path
    payload = payload_file.read_bytes()
    broker = COLUMN[settings.embedded_broker]
    expected = readme_matrix()
    assert set(expected) == set(CASES)
    calls = {}
    if npm_dir is None:
        pytest.skip("kafkajs: Node.js/npm missing or the npm registry unreachable")
    run = uuid.uuid4().hex[:4]   # both brokers' runs share one database
    for client, mode in CASES:
        call_id = f"m{run}-" + re.sub(r"[^a-z0-9]+", "-", f"{client}-{mode}")
        publish = {"kafka-python": kafka_python, "aiokafka": aiokafka, "confluent-kafka": confluent,
                   "kafkajs": lambda s, c, p, m: kafkajs(s, c, p, m, npm_dir, payload_file)}[client]
        if expected[(client, mode)][broker].startswith(REFUSED):
            with pytest.raises(Exception):    # noqa: B017 (the clients' own error types differ)
                publish(settings, call_id, payload, mode)
            continue
        calls[(client, mode)] = call_id
        publish(settings, call_id, payload, mode)
    worker = stack.start_worker(env, "matrix")
    try:
        observed = {}
        for case, call_id in calls.items():
            if expected[case][broker].startswith("rows"):
                wait_chunks(settings, call_id, 1, timeout=180)
        # Everything published was settled: the topic's chunks all have their ledger rows.
        wait_chunks(settings, calls[("confluent-kafka", "transaction, committed")], 1, timeout=60)
        for case, call_id in calls.items():
            n = query(settings, "SELECT count(*) FROM emotion_segments WHERE call_id = :c", c=call_id)[0][0]
            observed[case] = "rows" if n else "no rows"
        want = {case: ("rows" if expected[case][broker].startswith("rows") else "no rows") for case in calls}
        assert observed == want
        assert worker.poll() is None, stack.worker_log("matrix")
    finally:
        stack.stop_worker(worker)
