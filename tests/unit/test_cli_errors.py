"""Mistakes a new user makes get one line that says what is wrong, and a non-zero exit, before anything
is published or connected to (the real CLI, in a subprocess)."""

import os
import subprocess
import sys

from pipeline.settings import REPO_ROOT


def cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60, env={**os.environ, **env})


def test_a_call_id_the_contract_refuses_is_refused_before_publishing():
    out = cli("produce", "anything.mp4", "--call-id", "my call 1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "'my call 1' is not a call id the contract accepts" in out.stderr
    assert "malformed_header" in out.stderr


def test_a_missing_recording_is_one_line_naming_the_path():
    out = cli("produce", "/nonexistent/call.mp4", "--call-id", "c-1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "error: /nonexistent/call.mp4: no such file"


def test_the_traceback_is_there_when_asked_for():
    out = cli("--debug", "produce", "/nonexistent/call.mp4", "--call-id", "c-1")
    assert out.returncode != 0 and "Traceback" in out.stderr and "FileNotFoundError" in out.stderr
    out = cli("produce", "/nonexistent/call.mp4", "--call-id", "c-1", CALLSTREAM_DEBUG="1")
    assert "Traceback" in out.stderr


def test_an_unknown_dead_letter_reason_lists_the_reasons():
    out = cli("dlq", "--reason", "bogus")
    assert out.returncode == 2 and "invalid choice: 'bogus'" in out.stderr and "decode_timeout" in out.stderr


def test_a_misspelt_setting_is_named_with_the_one_meant():
    out = cli("produce", "/nonexistent/call.mp4", "--call-id", "c-1", CALLSTREAM_WORKER_CONCURENCY="8",
              CALLSTREAM_NOT_A_THING="1")
    assert "warning: CALLSTREAM_WORKER_CONCURENCY is not a callstream setting and is ignored; did you mean " \
           "CALLSTREAM_WORKER_CONCURRENCY?" in out.stderr
    assert "warning: CALLSTREAM_NOT_A_THING is not a callstream setting" in out.stderr


def _down(**more):
    """Settings that point at services nobody runs: a port nothing listens on."""
    return {"CALLSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
            **more}


def _one_line(out):
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    return [line for line in out.stderr.splitlines() if line.startswith("error: ")]


def test_postgres_down_is_one_line_naming_it_and_the_command_that_starts_it():
    import time

    t0 = time.monotonic()
    out = cli("timeline", "c-1", **_down())
    assert out.returncode == 2 and time.monotonic() - t0 < 30
    (line,) = _one_line(out)
    assert line.startswith("error: Postgres at postgresql://nobody@127.0.0.1:9/none does not answer")
    assert "callstream up" in line and "DATABASE_URL" in line


def test_kafka_down_is_one_line_within_seconds_for_produce_and_dlq(tmp_path):
    import time

    from pipeline.media.ffmpeg_bin import ffmpeg_exe

    rec = tmp_path / "call.wav"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=300:duration=2", str(rec)], check=True)
    for args in (("produce", str(rec), "--call-id", "c-1", "--layout", "customer"), ("dlq",)):
        t0 = time.monotonic()
        out = cli(*args, **_down())
        took = time.monotonic() - t0
        assert out.returncode == 2 and took < 30, (args, took, out.stderr[-500:])
        (line,) = _one_line(out)
        assert line.startswith("error: Kafka at 127.0.0.1:9 does not answer") and "callstream up" in line, line


def test_settings_show_the_effective_connections_with_the_password_masked():
    out = cli("settings", DATABASE_URL="postgresql://app:s3cret@db.internal:5432/calls",
              CALLSTREAM_KAFKA_BOOTSTRAP="kafka-1:9092", CALLSTREAM_FAST_DECODE="true")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Kafka bootstrap     kafka-1:9092 (yours)" in text
    assert "Postgres            postgresql://app:********@db.internal:5432/calls (yours)" in text
    assert "s3cret" not in text
    assert "S3 endpoint         http://127.0.0.1:8333 (embedded)" in text and "claim-check bucket" in text
    assert "CALLSTREAM_FAST_DECODE" in text and " true " in text and "True" not in text


def test_a_file_that_is_not_media_is_one_line_before_anything_connects():
    out = cli("produce", "README.md", "--call-id", "c-1", **_down())
    assert out.returncode == 2
    (line,) = _one_line(out)
    assert line.startswith("error: README.md is not a recording ffmpeg can read (")


def test_the_object_store_and_triton_down_name_themselves():
    import botocore.exceptions
    from tritonclient.utils import InferenceServerException

    from pipeline.cli import unreachable_service
    from pipeline.settings import Settings

    settings = Settings.from_env()
    s3 = unreachable_service(botocore.exceptions.EndpointConnectionError(endpoint_url=settings.s3_url))
    assert s3 is not None and s3.startswith(f"the object store at {settings.s3_url} does not answer")
    triton = unreachable_service(InferenceServerException("[StatusCode.UNAVAILABLE] failed to connect to all "
                                                          "addresses"))
    assert triton is not None and triton.startswith(f"Triton at {settings.triton_grpc_url} does not answer")
    assert unreachable_service(InferenceServerException("[StatusCode.INVALID_ARGUMENT] bad input")) is None
    assert unreachable_service(ValueError("a bug")) is None


def test_bench_refuses_bad_recordings_in_one_line_before_starting_anything(tmp_path):
    """`bench --recording` cuts the recordings before it starts a stack: a wrong file costs a line."""
    out = cli("bench", "--recording", "README.md", "--no-peers", **_down())
    assert out.returncode == 2
    (line,) = _one_line(out)
    assert line.startswith("error: README.md is not a recording ffmpeg can read (")
    out = cli("bench", "--recording", str(tmp_path / "gone.mp4"), **_down())
    assert out.returncode == 2 and _one_line(out) == [f"error: {tmp_path / 'gone.mp4'}: no such file"]
    out = cli("bench", "--participant", f"c1:customer={tmp_path / 'gone.wav'}", **_down())
    assert out.returncode == 2 and _one_line(out) == [f"error: {tmp_path / 'gone.wav'}: no such file"]
    out = cli("bench", "--shape", "640x360", **_down())
    assert out.returncode == 2 and "640x360" in _one_line(out)[0] and "WIDTHxHEIGHT@FPS" in _one_line(out)[0]
