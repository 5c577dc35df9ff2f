"""Every codec Kafka defines is readable by both clients the project consumes with, from the core
install alone; a worker that could not read one refuses to start with one line."""

import os
import subprocess
import sys
import tomllib

from pipeline.ingest.codecs import CODECS, unreadable
from pipeline.settings import REPO_ROOT

# Blocks the given top-level modules in a child interpreter, as if they were not installed.
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked by the test")
sys.meta_path.insert(0, Block())
"""
OPTIONAL = {"torch", "onnxruntime", "onnx", "matplotlib", "skimage", "keras", "confluent_kafka", "h5py",
            "callstream_lab", "tests"}


def child(code: str, blocked: set[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK.format(blocked=sorted(blocked)) + code, *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          env={**os.environ, "CALLSTREAM_STATE_DIR": "/tmp/callstream-codec-test"})


def test_both_clients_read_every_codec_here():
    assert unreadable() == []
    assert CODECS == ("gzip", "snappy", "lz4", "zstd")


def test_the_codec_libraries_are_core_dependencies_and_need_nothing_optional():
    core = " ".join(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for lib in ("cramjam", "python-snappy", "lz4", "zstandard"):
        assert lib in core
    done = child("from pipeline.ingest.codecs import unreadable\nimport pipeline.worker.app\n"
                 "print(unreadable())", OPTIONAL)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


def test_a_worker_that_cannot_read_a_codec_refuses_to_start_with_one_line():
    done = child("from pipeline.cli import main\nsys.exit(main(['worker']))", {"cramjam"})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "aiokafka: snappy" in lines[0] and "cramjam" in lines[0], done.stderr[-2000:]
