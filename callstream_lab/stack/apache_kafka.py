"""Apache Kafka 4.4 in KRaft mode (one combined broker and controller), from Maven Central's jars.

The embedded default stays tansu (pip alone installs it); this one is what production runs, for the
tests and for anyone with Java 17+ and Maven (`CALLSTREAM_EMBEDDED_BROKER=kafka callstream up`). The
jars are resolved once per pom into the state folder (`mvn dependency:copy-dependencies`), the storage
is formatted once, and the server runs from the jars with the settings docker-compose.yml gives its
Kafka image.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from callstream_lab.stack import procs
from pipeline.settings import REPO_ROOT, Settings

NAME = "kafka"
POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
MIN_JAVA = 17


def missing() -> str | None:
    """Why Apache Kafka cannot run here (no Java 17+, no Maven), or None."""
    java = shutil.which("java")
    if java is None:
        return "no `java` on PATH (Apache Kafka 4.4 needs Java 17 or newer)"
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    m = re.search(r'version "(\d+)', out)
    if not m or int(m.group(1)) < MIN_JAVA:
        return f"Java {m.group(1) if m else '?'} found; Apache Kafka 4.4 needs {MIN_JAVA} or newer"
    if shutil.which("mvn") is None:
        return "no `mvn` on PATH (Maven resolves Apache Kafka's jars from Maven Central)"
    return None


def jars(state: Path) -> Path:
    libs = state / "kafka" / "libs"
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    stamp = libs / ".pom-sha256"
    if stamp.is_file() and stamp.read_text() == want:
        return libs
    why = missing()
    if why:
        raise procs.ServiceError(f"Apache Kafka: {why}")
    shutil.rmtree(libs, ignore_errors=True)
    done = subprocess.run(["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                           f"-DoutputDirectory={libs}"], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise procs.ServiceError(f"Apache Kafka: resolving its jars failed:\n{(done.stdout + done.stderr)[-2000:]}")
    stamp.write_text(want)
    return libs


@dataclass(frozen=True)
class Secure:
    """A broker as a managed cluster runs one: clients on SASL_SSL (SCRAM-SHA-512 and PLAIN), ACLs
    enforced (StandardAuthorizer, nothing allowed without an ACL). `users` maps names to passwords and
    holds `admin`, the super user the broker uses on its own listener. The controller listener stays
    plaintext on loopback, its principal (ANONYMOUS) a super user, as the broker must reach it."""
    keystore: Path              # PEM: the broker's PKCS#8 private key, then its certificate chain
    cafile: Path                # PEM: the CA the broker trusts on its own inter-broker connections
    users: Mapping[str, str]

    def lines(self) -> list[str]:
        admin = self.users["admin"]
        plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in sorted(self.users.items()))
        return [
            "inter.broker.listener.name=SASL_SSL", "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram."
            f'ScramLoginModule required username="admin" password="{admin}";',
            "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain."
            f'PlainLoginModule required username="admin" password="{admin}" {plain_users};',
            "ssl.keystore.type=PEM", f"ssl.keystore.location={self.keystore}",
            "ssl.truststore.type=PEM", f"ssl.truststore.location={self.cafile}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:admin;User:ANONYMOUS", "allow.everyone.if.no.acl.found=false"]

    def scram(self) -> list[str]:
        """StorageTool arguments that create every user's SCRAM-SHA-512 credential at format time."""
        return [arg for name, pw in sorted(self.users.items())
                for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={pw}]")]


def properties(settings: Settings, name: str = NAME, secure: Secure | None = None) -> str:
    port, controller = settings.kafka_port, settings.kafka_controller_port
    listener = "SASL_SSL" if secure else "PLAINTEXT"
    return "\n".join([
        "process.roles=broker,controller", "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
        f"listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners={listener}://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT",
        *(secure.lines() if secure else []),
        f"log.dirs={settings.state_dir / name / 'data'}",
        # As docker-compose.yml's Kafka: one node, so every internal topic has one replica.
        "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0",
        f"num.partitions={settings.partitions}", "message.max.bytes=4194304", ""])


def _ready(settings: Settings) -> bool:
    from kafka import KafkaAdminClient

    from pipeline.ingest.security import kafka_python_kwargs

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=3000,
                                 **kafka_python_kwargs(settings))
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def start(settings: Settings, name: str = NAME, secure: Secure | None = None) -> None:
    """Start the broker `name` (its files under the state folder's `name/`). With `secure`, `settings`
    are the admin's client settings (SASL_SSL, the test CA): readiness is checked as the admin."""
    state = settings.state_dir
    libs = jars(state)
    home = state / name
    home.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    config.write_text(properties(settings, name, secure))
    java = shutil.which("java") or "java"
    classpath = f"{libs}/*"
    if not (home / "data" / "meta.properties").is_file():
        subprocess.run([java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
                        "-t", _cluster_id(), "-c", str(config), *(secure.scram() if secure else [])],
                       check=True, capture_output=True, timeout=300)
    procs.start(state, name, [java, "-Xms256m", "-Xmx1g", "-cp", classpath, "kafka.Kafka", str(config)])
    procs.wait_until(lambda: procs.port_open(settings.kafka_port) and _ready(settings), "Apache Kafka", 120,
                     state, name)


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as StorageTool makes, and,
    as Kafka's own Uuid.randomUuid, never one that starts with "-": StorageTool's parser reads
    `-t -hZm...` as an option, and the broker's format failed (one start in 64)."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def stop(settings: Settings, name: str = NAME) -> bool:
    return procs.stop(settings.state_dir, name)
