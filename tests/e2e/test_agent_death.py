"""A worker whose chunks agent dies must not look alive: it exits non-zero, so its supervisor
(systemd, Kubernetes, compose's restart policy) restarts it."""

import os
import subprocess
import sys

import pytest

from pipeline.settings import REPO_ROOT

pytestmark = pytest.mark.stack

# The fault: the agent's loop raises at once (nothing in the product raises there; this stands in for a bug).
INJECT = """
import sys
import pipeline.worker.app as app

async def broken(*args, **kwargs):
    raise RuntimeError("injected: the ordered-commit loop died")

app.consume = broken
from pipeline.cli import main
sys.exit(main(["worker"]))
"""


def test_a_worker_whose_agent_dies_exits_non_zero(stack):
    env, settings = stack.isolated("agentdeath")
    log = settings.state_dir / "logs" / "worker-agentdeath.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", INJECT], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env}, cwd=REPO_ROOT, start_new_session=True)
    try:
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert code != 0, text[-3000:]
    assert "injected: the ordered-commit loop died" in text
