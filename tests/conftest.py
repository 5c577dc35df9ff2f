import os
from pathlib import Path

import pytest

from pipeline.settings import REPO_ROOT, Settings


def pytest_configure(config) -> None:
    """The suite runs on the settings each test gives, never the developer's: a shell with
    CALLSTREAM_S3_PORT set (the README's namespace recipe) must not change what a test sees, in this
    process or in the workers and commands it starts. DATABASE_URL is kept: it names the Postgres server
    the stack may use."""
    for key in [k for k in os.environ if k.startswith("CALLSTREAM_")]:
        del os.environ[key]


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """The repository's triton_models/, built from the installed packages if it is not yet."""
    from pipeline.model.build.build import build_all, is_built  # torch: only for tests that need models

    repo = REPO_ROOT / "triton_models"
    if not is_built(repo):
        build_all(repo)
    return repo


@pytest.fixture(scope="session")
def stack(tmp_path_factory, model_repository):
    """Real SeaweedFS, tansu, Postgres (DATABASE_URL's server or the embedded one) and tritonserver."""
    from tests.stack import start_stack, stop_stack

    started = start_stack(tmp_path_factory.mktemp("stack"))
    yield started
    stop_stack(started)


@pytest.fixture(scope="session")
def kafka_stack(stack):
    """The same services with Apache Kafka 4.4 (KRaft, from Maven Central's jars) in place of tansu; the
    leg skips, saying why, where Java 17+ or Maven is missing."""
    from callstream_lab.stack import apache_kafka
    from tests.stack import Stack, free_port

    why = apache_kafka.missing()
    if why:
        pytest.skip(f"Apache Kafka leg: {why}")
    env = {**stack.env, "CALLSTREAM_EMBEDDED_BROKER": "kafka", "CALLSTREAM_KAFKA_PORT": str(free_port()),
           "CALLSTREAM_KAFKA_CONTROLLER_PORT": str(free_port())}
    started = Stack(env, Settings.from_env(env))
    apache_kafka.start(started.settings)
    yield started
    for w in started.workers:
        if w.poll() is None:
            started.stop_worker(w, timeout=10)
    apache_kafka.stop(started.settings)


@pytest.fixture(params=["tansu", "kafka"])
def any_stack(request):
    """The core cases run on both brokers: the embedded tansu and Apache Kafka."""
    return request.getfixturevalue("stack" if request.param == "tansu" else "kafka_stack")
