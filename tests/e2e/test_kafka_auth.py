"""Auth and least privilege on a real Apache Kafka broker, as managed clusters run it: SASL_SSL with a
CA the test makes, SCRAM-SHA-512 and PLAIN users, ACLs enforced. The worker's principal may read the
chunks topic in its group and write the dead-letter and alerts topics (and Faust's own `<app id>-`
topics); the recorder's may only write chunks. Whatever else either tries is refused by the broker."""

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from callstream_lab.stack import apache_kafka
from pipeline.ingest.lag import group_lag
from pipeline.ingest.producer import ChunkPublisher
from pipeline.ingest.topics import ensure_topics
from pipeline.settings import REPO_ROOT, Settings
from tests.e2e.helpers import query, wait_chunks
from tests.stack import free_port, wait_for

pytestmark = pytest.mark.stack

NAME = "kafka-secure"


@dataclass
class SecureKafka:
    env: dict[str, str]       # the stack's environment with this broker, no credentials
    cafile: Path
    passwords: dict[str, str]

    def as_user(self, user: str, mechanism: str = "SCRAM-SHA-512", password: str | None = None
                ) -> tuple[dict[str, str], Settings]:
        env = {**self.env, "CALLSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
               "CALLSTREAM_KAFKA_SASL_MECHANISM": mechanism, "CALLSTREAM_KAFKA_SASL_USERNAME": user,
               "CALLSTREAM_KAFKA_SASL_PASSWORD": password if password is not None else self.passwords[user],
               "CALLSTREAM_KAFKA_SSL_CAFILE": str(self.cafile)}
        return env, Settings.from_env(env)


def grant(admin_settings: Settings, principal: str, rules: list[tuple[str, str, str, str]]) -> None:
    """rules: (resource type, name, pattern LITERAL|PREFIXED, operation)."""
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    from pipeline.ingest.security import kafka_python_kwargs

    admin = KafkaAdminClient(bootstrap_servers=admin_settings.bootstrap_servers, **kafka_python_kwargs(admin_settings))
    try:
        result = admin.create_acls([
            ACL(principal=f"User:{principal}", host="*", operation=ACLOperation[op],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(ResourceType[kind], name, ACLResourcePatternType[pattern]))
            for kind, name, pattern, op in rules])
        assert not result["failed"], result["failed"]
    finally:
        admin.close()


@pytest.fixture(scope="module")
def secure(stack, tmp_path_factory):
    why = apache_kafka.missing()
    if why:
        pytest.skip(f"Apache Kafka leg: {why}")
    import trustme
    from cryptography.hazmat.primitives import serialization

    tls = tmp_path_factory.mktemp("tls")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    keystore = tls / "broker.pem"      # Kafka's PEM keystore: a PKCS#8 key, then the chain
    keystore.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
                         + b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cafile = tls / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    passwords = {user: secrets.token_urlsafe(12) for user in ("admin", "worker", "recorder")}
    env = {**stack.env, "CALLSTREAM_EMBEDDED_BROKER": "kafka", "CALLSTREAM_KAFKA_PORT": str(free_port()),
           "CALLSTREAM_KAFKA_CONTROLLER_PORT": str(free_port())}
    kafka = SecureKafka(env, cafile, passwords)
    _, admin = kafka.as_user("admin")
    apache_kafka.start(admin, NAME, apache_kafka.Secure(keystore, cafile, passwords))
    yield kafka
    apache_kafka.stop(admin, NAME)


def test_the_pipeline_runs_end_to_end_under_sasl_ssl_with_least_privilege(secure, stack, media):
    _, admin = secure.as_user("admin")
    tag = secrets.token_hex(3)
    topics = {"CALLSTREAM_CHUNKS_TOPIC": f"chunks.sec-{tag}", "CALLSTREAM_DLQ_TOPIC": f"dlq.sec-{tag}",
              "CALLSTREAM_ALERTS_TOPIC": f"alerts.sec-{tag}", "CALLSTREAM_APP_ID": f"cs-sec-{tag}",
              "CALLSTREAM_METRICS_PORT": "0"}
    admin = Settings.from_env({**secure.as_user("admin")[0], **topics})
    ensure_topics(admin)      # the operator creates the topics; neither principal may
    app = admin.app_id
    grant(admin, "worker", [("TOPIC", admin.chunks_topic, "LITERAL", "READ"),
                            ("GROUP", app, "LITERAL", "READ"),
                            ("TOPIC", admin.dlq_topic, "LITERAL", "WRITE"),
                            ("TOPIC", admin.alerts_topic, "LITERAL", "WRITE"),
                            ("TOPIC", f"{app}-", "PREFIXED", "ALL")])    # Faust's own topics
    grant(admin, "recorder", [("TOPIC", admin.chunks_topic, "LITERAL", "WRITE")])

    worker_env, worker = secure.as_user("worker")
    worker_env.update(topics)
    worker = Settings.from_env(worker_env)
    recorder_env, _ = secure.as_user("recorder", mechanism="PLAIN")
    recorder_env.update(topics)
    call = f"e2e-sec-{tag}"

    # The recorder publishes with `callstream produce` (PLAIN over TLS): it may write chunks, nothing else.
    proc = stack.start_worker(worker_env, f"sec-{tag}")
    try:
        out = subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", str(media["call10"]), "--call-id",
                              call], capture_output=True, text=True, env={**os.environ, **recorder_env},
                             cwd=REPO_ROOT, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        wait_chunks(worker, call, 2)
        assert query(worker, "SELECT count(*) FROM emotion_segments WHERE call_id = :c", c=call)[0][0] == 10
        # A malformed chunk is dead-lettered: the worker may write the DLQ.
        with ChunkPublisher(Settings.from_env(recorder_env), create_topics=False) as pub:
            pub.publish_raw(b"x", f"{call}-bad".encode(), [("callstream-schema", b"1")])
            pub.wait()
        wait_for(lambda: query(worker, "SELECT dead_lettered_at IS NOT NULL FROM chunks WHERE topic = :t AND "
                                       "status = 'failed'", t=worker.chunks_topic) == [(True,)], 120,
                 "the dead letter sent", log=lambda: stack.worker_log(f"sec-{tag}"))
        assert proc.poll() is None
        wait_for(lambda: {p.lag for p in group_lag(admin)} == {0}, 30, "every offset committed")
    finally:
        stack.stop_worker(proc)
    log = stack.worker_log(f"sec-{tag}")
    assert "Traceback" not in log and "AuthorizationFailed" not in log, log
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "status"], capture_output=True, text=True,
                         env={**os.environ, **worker_env}, cwd=REPO_ROOT, timeout=120)
    assert f"consumer group {app} on {worker.chunks_topic}: lag 0" in out.stdout, out.stdout
    assert f"dead letters on {worker.dlq_topic}: not counted (worker may not read that topic)" in out.stdout

    # Least privilege, as the broker enforces it.
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    from pipeline.ingest.security import kafka_python_kwargs

    for settings, topic in ((worker, worker.chunks_topic), (Settings.from_env(recorder_env), worker.dlq_topic)):
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, max_block_ms=10_000,
                                 **kafka_python_kwargs(settings))
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(topic, b"x", key=b"k").get(timeout=20)
        finally:
            producer.close()


def test_a_worker_with_a_wrong_password_fails_with_one_line_naming_the_broker_and_the_setting(secure, stack):
    env, settings = secure.as_user("worker", password="not-the-password")
    env.update(CALLSTREAM_APP_ID=f"cs-sec-{secrets.token_hex(3)}")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "worker"], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=REPO_ROOT, timeout=120)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr[-3000:]
    assert settings.bootstrap_servers in lines[0] and "CALLSTREAM_KAFKA_SASL_PASSWORD" in lines[0], lines[0]
