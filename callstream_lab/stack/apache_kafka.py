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


def properties(settings: Settings) -> str:
    port, controller = settings.kafka_port, settings.kafka_controller_port
    return "\n".join([
        "process.roles=broker,controller", "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={settings.state_dir / 'kafka' / 'data'}",
        # As docker-compose.yml's Kafka: one node, so every internal topic has one replica.
        "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0",
        f"num.partitions={settings.partitions}", "message.max.bytes=4194304", ""])


def _ready(settings: Settings) -> bool:
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=3000)
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def start(settings: Settings) -> None:
    state = settings.state_dir
    libs = jars(state)
    home = state / "kafka"
    config = home / "server.properties"
    config.write_text(properties(settings))
    java = shutil.which("java") or "java"
    classpath = f"{libs}/*"
    if not (home / "data" / "meta.properties").is_file():
        subprocess.run([java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
                        "-t", _cluster_id(), "-c", str(config)], check=True, capture_output=True, timeout=300)
    procs.start(state, NAME, [java, "-Xms256m", "-Xmx1g", "-cp", classpath, "kafka.Kafka", str(config)])
    procs.wait_until(lambda: procs.port_open(settings.kafka_port) and _ready(settings), "Apache Kafka", 120,
                     state, NAME)


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as StorageTool makes."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def stop(settings: Settings) -> bool:
    return procs.stop(settings.state_dir, NAME)
