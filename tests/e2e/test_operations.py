"""What an operator sees, through the real stack: metrics after a known workload, a live alert that
fires once for the call that turns bad and never for the calm one, and chunks published by two
different Kafka clients (confluent-kafka / librdkafka, and kafka-python)."""

import json
import math
import os
import re
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from callstream_lab.synth import speech_wav
from pipeline.contract import ChunkMeta
from pipeline.ingest.lag import group_lag
from pipeline.ingest.producer import ChunkPublisher
from pipeline.ingest.topics import read_from_start
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import REPO_ROOT
from tests.e2e.helpers import query, wait_chunks
from tests.stack import free_port, wait_for

pytestmark = pytest.mark.stack

RULES = """
[[rule]]
name = "customer-shouting"
arousal_above = 0.7
for_seconds = 4

# The agent is not analysed (the lawful default): a rule on agents never sees a row, so never fires.
[[rule]]
name = "agent-angry"
role = "agent"
labels = ["angry"]
at_least = 1
of_last = 1
"""


def confluent_publish(settings, metas_payloads) -> None:
    """A librdkafka producer, configured as a recorder team would (acks=all, idempotent)."""
    from confluent_kafka import Producer

    errors: list = []
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all", "enable.idempotence": True,
                  "message.max.bytes": 4_000_000})
    for meta, payload in metas_payloads:
        p.produce(settings.chunks_topic, key=meta.call_id.encode(), value=payload, headers=meta.headers(),
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert p.flush(30) == 0 and not errors, errors


def chunks_of(path, call_id, participant):
    chunks = cut(ffmpeg_exe(), path, 4.0)
    return [(ChunkMeta(call_id, c.seq, c.start_ms, duration_ms=c.end_ms - c.start_ms,
                       end_of_call=c.seq == len(chunks) - 1, participant_id=participant, role="customer",
                       media="audio"), c.path.read_bytes()) for c in chunks]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_metrics_alerts_and_any_kafka_client(any_stack, tmp_path):
    stack = any_stack
    broker = stack.settings.embedded_broker
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    port = free_port()
    env, settings = stack.isolated("ops")
    env.update(CALLSTREAM_METRICS_PORT=str(port), CALLSTREAM_ALERT_RULES=str(rules))
    worker = stack.start_worker(env, f"ops-{broker}")
    bad_call, calm_call = f"e2e-ops-{broker}-bad", f"e2e-ops-{broker}-calm"   # both legs share one database
    try:
        bad = chunks_of(speech_wav(tmp_path / "bad.wav", 6, 10), bad_call, "caller-1")
        calm = chunks_of(speech_wav(tmp_path / "calm.wav", 16), calm_call, "caller-2")
        confluent_publish(settings, bad)                   # librdkafka
        with ChunkPublisher(settings) as pub:              # kafka-python
            for meta, payload in calm:
                pub.publish(meta, payload)
            pub.publish_raw(b"x", bad_call.encode(), [("callstream-schema", b"1")])   # one malformed message
            pub.wait()
        wait_chunks(settings, bad_call, len(bad))
        wait_chunks(settings, calm_call, len(calm))

        # Both clients' chunks became timelines.
        for call, n in ((bad_call, 16), (calm_call, 16)):
            assert query(settings, "SELECT count(*) FROM emotion_segments WHERE call_id = :c", c=call)[0][0] == n

        # The call that turns bad fires the arousal rule once; the calm one fires nothing.
        fired = query(settings, "SELECT call_id, rule, participant_id, window_start_ms, window_end_ms, details, "
                                "published_at FROM alerts WHERE call_id IN (:b, :k)", b=bad_call, k=calm_call)
        assert [(a.call_id, a.rule, a.participant_id) for a in fired] == [(bad_call, "customer-shouting",
                                                                           "caller-1")]
        alert = fired[0]
        # Inside the shouting (6-16 s); which 4-s window depends on which chunk committed first.
        assert 6000 <= alert.window_start_ms and alert.window_end_ms <= 16000
        assert alert.window_end_ms - alert.window_start_ms >= 4000
        assert alert.details["min_arousal"] > 0.7
        wait_for(lambda: query(settings, "SELECT published_at FROM alerts WHERE call_id = :c", c=bad_call)[0][0],
                 30, "the alert published")
        on_topic = read_from_start(settings, settings.alerts_topic, expect=1, timeout=30)
        assert len(on_topic) == 1
        body = json.loads(on_topic[0].value)
        assert body["rule"] == "customer-shouting" and body["call_id"] == bad_call
        assert body["participant_id"] == "caller-1" and body["role"] == "customer"
        assert body["window"] == {"start_ms": alert.window_start_ms, "end_ms": alert.window_end_ms}

        # Redelivered chunks of the bad call do not publish the alert again.
        confluent_publish(settings, bad[-2:])
        wait_for(lambda: query(settings, "SELECT count(*) FROM chunks WHERE call_id = :c", c=bad_call)[0][0]
                 == len(bad) + 2, 120, "the redelivery settled")
        assert len(read_from_start(settings, settings.alerts_topic, timeout=10)) == 1

        # `callstream alerts tail` prints it.
        out = subprocess.run([sys.executable, "-m", "pipeline.cli", "alerts", "tail", "--from-start", "--max", "1"],
                             capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO_ROOT, timeout=60)
        assert out.returncode == 0 and f"{bad_call}  caller-1 (customer)  customer-shouting" in out.stdout
        assert f"waiting for alerts on {settings.alerts_topic} at {settings.bootstrap_servers}" in out.stderr

        # The metrics tell the same story.
        chunks = len(bad) + 2 + len(calm)
        m = scrape(port)
        assert m[("callstream_chunks_total", (("outcome", "done"), ("reason", "")))] == chunks
        assert m[("callstream_chunks_total", (("outcome", "failed"), ("reason", "missing_header")))] == 1
        assert m[("callstream_dlq_published_total", (("reason", "missing_header"),))] == 1
        assert m[("callstream_alerts_published_total", (("rule", "customer-shouting"),))] == 1
        assert m[("callstream_segments_written_total", ())] >= 32
        for stage in ("decode", "inference", "db"):
            assert m[("callstream_stage_seconds_count", (("stage", stage),))] == chunks
        # Publication to commit is measured for every chunk: from published-at-ms where the recorder sets
        # it (ChunkPublisher does), else from the record's Kafka timestamp (the librdkafka chunks here).
        assert m[("callstream_publish_to_commit_seconds_count", ())] == chunks
        assert query(settings, "SELECT count(*) FROM chunks WHERE call_id = :c AND published_at IS NULL",
                     c=bad_call)[0][0] == 0
        assert m[("callstream_chunks_in_flight", ())] == 0
        def lags() -> dict[int, float]:
            return {int(dict(k[1])["partition"]): v for k, v in scrape(port).items()
                    if k[0] == "callstream_consumer_lag"}
        wait_for(lambda: len(lags()) == settings.partitions, 30, "lag reported for every partition")
        if broker == "kafka":
            # Everything is settled and committed: the worker's lag is 0 everywhere, and it is what the
            # broker says (end minus the group's committed offset), as `status` reads it.
            wait_for(lambda: all(v == 0 for v in lags().values()), 30, "lag 0 on every partition")
            assert {p.partition: p.lag for p in group_lag(settings)} == dict.fromkeys(lags(), 0)
        else:
            # tansu's high watermarks are not to be trusted (see lag.end_offsets): the figure is there for
            # every partition, a number or NaN ("unknown"), never negative.
            assert all(v >= 0 or math.isnan(v) for v in lags().values())
        # Triton serves the series the dashboard's batch-size and queue-time panels use.
        dashboard = json.loads((REPO_ROOT / "infra" / "grafana" / "dashboards" / "callstream.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        wanted = {m for e in exprs for m in re.findall(r"\b(nv_[a-z_]+)", e)}
        url = f"http://127.0.0.1:{stack.settings.triton_metrics_port}/metrics"
        triton = set(re.findall(r"^(nv_\w+)", urllib.request.urlopen(url, timeout=10).read().decode(), re.M))
        assert wanted and wanted <= triton, wanted - triton
    finally:
        stack.stop_worker(worker)
    assert "Traceback" not in stack.worker_log(f"ops-{broker}")
