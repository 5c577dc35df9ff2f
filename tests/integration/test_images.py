"""What can be checked of the production images and stack without a Docker engine (README §Production):
the Dockerfiles' Pythons against pyproject, the worker image's requirements resolved on its Python in a
fresh venv, the Triton backend's code run on the Triton image's Python, and docker-compose.yml's files,
settings, scrape targets and dashboard queries."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from pipeline.settings import REPO_ROOT, Settings
from pipeline.worker.metrics import Metrics

DOCKER = REPO_ROOT / "infra" / "docker"
# Python of the official Triton image (the release notes' framework matrix); add a line when bumping it.
TRITON_PYTHON = {"24.10": "3.10", "24.11": "3.12", "24.12": "3.12", "25.01": "3.12"}


def _from_lines(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f) for f in re.findall(r"^FROM (\S+)", text, re.M)]


def _python(version: str) -> str | None:
    """An interpreter of that version that really runs (a pyenv shim may exist without one)."""
    candidates = [str(p) for p in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python"))]
    candidates += [c for c in [shutil.which(f"python{version}")] if c]
    for cand in candidates:
        if subprocess.run([cand, "-c", "pass"], capture_output=True).returncode == 0:
            return cand
    return None


def _venv(tmp_path: Path, version: str) -> Path:
    python = _python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    subprocess.run([python, "-m", "venv", str(tmp_path / "venv")], check=True)
    return tmp_path / "venv" / "bin" / "python"


def _needs_registry(python: Path, tmp_path: Path, *packages: str) -> None:
    """Skip, with the reason, when the package index cannot serve what the test resolves: resolving
    requirements offline says nothing about them. Probed without pip's cache (a cached index page of a
    common package says nothing about the index), with a package every index has and the ones the test
    names, one by one: a requirement that really does not resolve, from an index that serves all of
    these, still fails the test. A probe that hangs counts as unreachable."""
    for package in ("six", *packages):
        try:
            probe = subprocess.run([str(python), "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q",
                                    "-d", str(tmp_path / "probe"), package], capture_output=True, text=True,
                                   timeout=120)
        except subprocess.TimeoutExpired:
            pytest.skip(f"the package index cannot be reached (pip download {package}: no answer in 120 s); this "
                        "test resolves requirements against it")
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["no output"])[-1][:200]
            pytest.skip(f"the package index cannot be reached (pip download {package}: {last}); this test "
                        "resolves requirements against it")


def test_every_image_that_installs_the_project_uses_a_python_pyproject_accepts():
    requires = SpecifierSet(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    for dockerfile in ("worker.Dockerfile", "triton.Dockerfile"):
        builders = [f for f in _from_lines(DOCKER / dockerfile) if f.startswith("python:")]
        assert builders, dockerfile
        for image in builders:
            version = re.match(r"python:(\d+\.\d+)", image).group(1)
            assert version in requires, f"{dockerfile}: {image} but pyproject requires-python {requires}"


def test_the_worker_image_requirements_resolve_on_its_python(tmp_path):
    (image,) = _from_lines(DOCKER / "worker.Dockerfile")
    python = _venv(tmp_path, re.match(r"python:(\d+\.\d+)", image).group(1))
    _needs_registry(python, tmp_path, "faust-streaming", "tritonclient")
    report = tmp_path / "report.json"
    # As the Dockerfile does: the project's core, no extras; resolved, not installed.
    out = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                          "--report", str(report), str(REPO_ROOT)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    names = {i["metadata"]["name"].lower().replace("_", "-") for i in json.loads(report.read_text())["install"]}
    # The async engine's greenlet comes from sqlalchemy's asyncio extra; metrics and validation deps too.
    assert {"greenlet", "sqlalchemy", "prometheus-client", "pydantic", "faust-streaming", "tritonclient"} <= names
    # The lab and the model side stay out of a worker: no torch, no plotting, no image libraries.
    assert not names & {"torch", "onnxruntime", "onnx", "matplotlib", "h5py", "scikit-image", "pillow",
                        "espeakng-loader", "tensorflow", "keras"}, names


def test_the_triton_backend_runs_on_the_triton_images_python(tmp_path):
    serving = _from_lines(DOCKER / "triton.Dockerfile")[-1]
    tag = re.search(r"tritonserver:(\d+\.\d+)", serving).group(1)
    assert tag in TRITON_PYTHON, f"add the Python of Triton {tag} to TRITON_PYTHON"
    python = _venv(tmp_path, TRITON_PYTHON[tag])
    _needs_registry(python, tmp_path, "numpy<3")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy<3"], check=True, timeout=600)
    # What the image copies into its PYTHONPATH (tests/unit/test_houses.py pins the list).
    copied = re.findall(r"^COPY (pipeline\S*) /opt/callstream/", (DOCKER / "triton.Dockerfile").read_text(), re.M)
    sources = sorted(REPO_ROOT.glob("triton_models/*/1/model.py")) + sorted(
        f for c in copied for f in ([REPO_ROOT / c] if c.endswith(".py") else (REPO_ROOT / c).rglob("*.py")))
    # Every file the backend loads compiles on that Python; the numpy-only parts also run there.
    compiled = subprocess.run([str(python), "-m", "py_compile", *map(str, sources)], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    script = """
import numpy as np
from pipeline.shared.fusion import Evidence, fuse_evidence, merge
from pipeline.model.acoustics import prosody
face = np.array([0.05, 0.8, 0.05, 0.04, 0.02, 0.02, 0.02])
e = merge([Evidence(2, 2, 1.9, face, 500, 0.6, 0.7), Evidence(2, 1, 0.95, face, 500, 0.2, 0.4)])
assert fuse_evidence(e).label == "happy"
t = np.arange(16000) / 16000
assert 0 <= prosody(0.3 * np.sin(2 * np.pi * 150 * t)).arousal <= 1
print("ok")
"""
    ran = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={"PYTHONPATH": str(REPO_ROOT)})
    assert ran.stdout.strip() == "ok", ran.stderr[-2000:]


def test_the_compose_stack_is_consistent_with_the_code():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./infra"):   # files the repo ships (./recordings is the user's)
                assert (REPO_ROOT / source).exists(), f"{name}: {source}"
    # The workers' settings are valid settings (the same validation a worker does at start).
    env = services["worker"]["environment"]
    settings = Settings.from_env({k: str(v) for k, v in env.items()})
    assert Path(env["CALLSTREAM_ALERT_RULES"]).parent.as_posix() in " ".join(services["worker"]["volumes"])
    # Workers log in as a writer without DDL rights: the init script creates the login, `db upgrade`
    # (the migrate service the workers wait for) grants it callstream_writer.
    login = env["DATABASE_URL"].split("//", 1)[1].split(":", 1)[0]
    migrate = services["migrate"]["command"]
    assert migrate[:2] == ["db", "upgrade"] and migrate[migrate.index("--grant-writer") + 1] == login
    assert services["worker"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    init = "".join(p.read_text() for p in (REPO_ROOT / "infra" / "postgres" / "init").glob("*.sql"))
    assert f"CREATE ROLE {login} LOGIN" in init
    # Prometheus scrapes the port the workers serve, and Triton's metrics port.
    prom = yaml.safe_load((REPO_ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["callstream-worker"]["dns_sd_configs"][0]["port"] == settings.metrics_port
    assert jobs["triton"]["static_configs"][0]["targets"] == ["triton:8002"]
    # Every callstream metric the dashboard plots exists.
    dashboard = json.loads((REPO_ROOT / "infra" / "grafana" / "dashboards" / "callstream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    served = {f.name + x for f in Metrics().registry.collect() for x in suffixes.get(f.type, [""])}
    used = {m for e in exprs for m in re.findall(r"\b(callstream_[a-z_]+)", e)}
    assert used and used <= served, used - served
    assert any("nv_inference_queue_duration_us" in e for e in exprs)  # Triton's names: tests/e2e/test_operations


def test_python_here_is_the_one_the_worker_image_uses():
    (image,) = _from_lines(DOCKER / "worker.Dockerfile")
    assert image.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}")


def test_a_registry_that_cannot_be_reached_skips_with_the_reason(tmp_path, monkeypatch):
    """Offline (here: an index URL nothing answers on), the registry tests skip and say why."""
    python = _venv(tmp_path, f"{sys.version_info.major}.{sys.version_info.minor}")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(pytest.skip.Exception, match="the package index cannot be reached"):
        _needs_registry(python, tmp_path)


def test_the_compose_kafka_is_the_apache_kafka_the_tests_run():
    """docker-compose.yml's broker image and the lab's Apache Kafka (infra/kafka/pom.xml) are one version,
    with the settings the lab gives it (callstream_lab/stack/apache_kafka.py)."""
    from callstream_lab.stack.apache_kafka import properties

    kafka = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["kafka"]
    pom = (REPO_ROOT / "infra" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<artifactId>kafka_2\.13</artifactId>\s*<version>([^<]+)</version>", pom).group(1)
    assert kafka["image"] == f"apache/kafka:{version}"
    env = kafka["environment"]
    lab = dict(line.split("=", 1) for line in properties(Settings.from_env({})).splitlines() if line)
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "group.initial.rebalance.delay.ms", "message.max.bytes"):
        assert str(env["KAFKA_" + key.upper().replace(".", "_")]) == lab[key], key
