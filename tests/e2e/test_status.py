"""`callstream status` tells the truth about a backlog: chunks waiting with no worker running show as
lag, and the dead letters it counts are the ones `dlq` lists."""

import os
import re
import subprocess
import sys

import pytest

from pipeline.ingest.producer import publish_recording
from pipeline.settings import REPO_ROOT

pytestmark = pytest.mark.stack


def test_status_shows_a_backlog_of_n_chunks_as_a_lag_of_n(any_stack, media):
    env, settings = any_stack.isolated("status")
    broker = settings.embedded_broker   # both brokers' runs share one database
    sent = publish_recording(settings, media["call20"], f"e2e-status-1-{broker}")
    sent += publish_recording(settings, media["call10"], f"e2e-status-2-{broker}")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "status"], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    lag = re.search(rf"consumer group {settings.app_id} on {re.escape(settings.chunks_topic)}: lag (\d+)", out.stdout)
    assert lag and int(lag[1]) == len(sent) == 6, out.stdout
    assert f"dead letters on {settings.dlq_topic}: 0" in out.stdout
