"""A record batch no client can read, on a real Apache Kafka broker: one byte of a chunk's batch is
flipped in the broker's log segment, as a failing disk would. The worker must stay up, keep every
other partition (and the rest of this one) flowing, give the unreadable offset its one end (a `failed`
row and a dead letter `unreadable_batch`), and name the partition and offset in its log, on /metrics
and in `callstream status`."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from callstream_lab.synth import generate_call
from pipeline.contract import ChunkMeta
from pipeline.ingest import dlq
from pipeline.ingest.lag import group_lag
from pipeline.ingest.producer import ChunkPublisher
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import REPO_ROOT
from tests.e2e.helpers import query
from tests.e2e.test_operations import scrape
from tests.stack import free_port, wait_for

pytestmark = pytest.mark.stack


def corrupt_batch_holding(segment: Path, offset: int) -> None:
    """Flip one byte of the records of the v2 batch holding `offset`: its CRC no longer matches."""
    data = segment.read_bytes()
    pos = 0
    while pos + 27 <= len(data):
        base, length = struct.unpack(">qi", data[pos:pos + 12])
        last = base + struct.unpack(">i", data[pos + 23:pos + 27])[0]
        if base <= offset <= last:
            at = pos + 12 + length - 20     # inside the batch's last record, well past its header
            with segment.open("r+b") as f:
                f.seek(at)
                f.write(bytes([data[at] ^ 0xFF]))
            return
        pos += 12 + length
    raise AssertionError(f"no batch holds offset {offset} in {segment}")


def test_an_unreadable_batch_costs_its_offset_only_and_is_named_everywhere(kafka_stack, tmp_path):
    stack = kafka_stack
    port = free_port()
    env, settings = stack.isolated("unreadable")
    env.update(CALLSTREAM_PARTITIONS="2", CALLSTREAM_METRICS_PORT=str(port))
    settings = type(settings).from_env(env)
    ff = ffmpeg_exe()
    chunk = cut(ff, generate_call(ff, tmp_path / "c.mp4", seconds=2.4), 5.0)[0].path.read_bytes()
    run = os.urandom(3).hex()
    placed = {(0, 0): f"ub-{run}-a", (0, 1): f"ub-{run}-b", (0, 2): f"ub-{run}-c", (1, 0): f"ub-{run}-d",
              (1, 1): f"ub-{run}-e"}
    with ChunkPublisher(settings) as pub:
        for (partition, offset), call in placed.items():
            meta = ChunkMeta(call, 0, 0, end_of_call=True, layout="customer")
            pub.publish_raw(chunk, call.encode(), meta.headers(), partition=partition)
            (landed,) = pub.wait()     # one batch per chunk
            assert (landed.partition, landed.offset) == (partition, offset)
    corrupt_batch_holding(settings.state_dir / "kafka" / "data" / f"{settings.chunks_topic}-0"
                          / "00000000000000000000.log", 1)

    worker = stack.start_worker(env, "unreadable")
    try:
        def ends() -> dict:
            return {(r[0], r[1]): (r[2], r[3]) for r in query(
                settings, 'SELECT partition, "offset", status, error_reason FROM chunks WHERE topic = :t',
                t=settings.chunks_topic)}
        wait_for(lambda: len(ends()) == 5, 120, "every offset settled", log=lambda: stack.worker_log("unreadable"))
        assert worker.poll() is None, stack.worker_log("unreadable")
        assert ends() == {(0, 0): ("done", None), (0, 1): ("failed", "unreadable_batch"), (0, 2): ("done", None),
                          (1, 0): ("done", None), (1, 1): ("done", None)}
        (letter,) = dlq.select(dlq.read_all(settings), reason="unreadable_batch")
        assert letter.source == f"{settings.chunks_topic}/0/1" and "Invalid CRC" in (letter.header("dlq-detail") or "")
        wait_for(lambda: {p.partition: p.committed for p in group_lag(settings)} == {0: 3, 1: 2}, 30,
                 "the commit past the unreadable offset")

        log = stack.worker_log("unreadable")
        assert f"{settings.chunks_topic}/0 offset 1: unreadable after 5 tries" in log
        fetches = scrape(port)[("callstream_unreadable_fetches_total",
                                (("partition", "0"), ("topic", settings.chunks_topic)))]
        assert fetches == 5
        out = subprocess.run([sys.executable, "-m", "pipeline.cli", "status"], capture_output=True, text=True,
                             env={**os.environ, **env}, cwd=REPO_ROOT, timeout=120)
        assert "offsets the consumer could not read" in out.stdout, out.stdout
        assert f"  {settings.chunks_topic}/0 offset 1, the last at" in out.stdout
        # Nothing was read, so there is nothing to replay: `dlq replay` says so and publishes nothing.
        out = subprocess.run([sys.executable, "-m", "pipeline.cli", "dlq", "replay", "--reason", "unreadable_batch"],
                             capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO_ROOT, timeout=120)
        assert out.returncode == 0 and "not replayed: 1 unreadable_batch letter(s)" in out.stdout, out.stdout
        assert "replayed 0 dead-lettered chunks" in out.stdout
    finally:
        stack.stop_worker(worker)
    assert "Traceback" not in stack.worker_log("unreadable")
