"""`callstream up | down | demo`: the embedded stack (services from wheels) and the demo on it."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from pipeline.cli.base import Handler
from pipeline.cli.calls import print_timeline, wait_for_call
from pipeline.settings import Settings, mask


def register(sub: Any) -> dict[str, Handler]:
    sub.add_parser("up", help="start the embedded stack (what settings do not point elsewhere) and apply the "
                              "schema revisions")
    sub.add_parser("down", help="stop the embedded stack")
    sub.add_parser("demo", help="start everything, process a generated call, print its timeline")
    return {"up": up, "down": down, "demo": demo}


def start(settings: Settings) -> None:
    """The embedded stack up, the schema migrated and the topics there: what `up`, `demo` and the lab
    commands start from."""
    from callstream_lab.stack import control
    from pipeline.model.build.build import build_all, is_built

    if not settings.triton_url and not is_built(settings.model_repository):
        print("building model artifacts from the installed packages ...")
        build_all(settings.model_repository)
    control.up(settings)
    _prepare(settings)
    print(f"Kafka {settings.bootstrap_servers} | S3 {settings.s3_url} | Triton {settings.triton_grpc_url} | "
          f"Postgres {mask('database_url', settings.db_url)}")


def up(settings: Settings, args: argparse.Namespace) -> int:
    start(settings)
    return 0


def _prepare(settings: Settings) -> None:
    from pipeline.ingest.topics import ensure_topics
    from pipeline.store.db import ensure_schema

    applied = ensure_schema(settings)
    if applied:
        print(f"  schema revisions applied: {applied}")
    ensure_topics(settings)


def down(settings: Settings, args: argparse.Namespace) -> int:
    from callstream_lab.stack import control

    control.down(settings)
    return 0


def demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.ingest.producer import publish_recording

    print("1/5 starting the embedded stack (SeaweedFS S3, tansu Kafka API, Postgres, Triton) ...")
    start(settings)
    print("2/5 starting a worker (log: .callstream/logs/worker-demo.log) ...")
    from callstream_lab.stack.procs import start_worker_process, stop_process

    worker = start_worker_process(settings.state_dir, "worker-demo")
    try:
        print("3/5 generating a 20-second sample call (two participants, faces and speech) ...")
        from callstream_lab.synth import generate_call
        from pipeline.media.ffmpeg_bin import ffmpeg_exe

        sample = generate_call(ffmpeg_exe(settings.ffmpeg_binary), settings.state_dir / "samples" / "sample-call.mp4",
                               seconds=20)
        call_id = f"demo-{uuid.uuid4().hex[:8]}"
        print(f"4/5 publishing {sample.name} as call {call_id} ...")
        sent = publish_recording(settings, sample, call_id)
        done, failed = wait_for_call(settings, call_id, len(sent), timeout=600)
        if done + failed < len(sent):
            print(f"timed out: {done}/{len(sent)} chunks processed; see .callstream/logs/worker-demo.log")
            return 1
        print("5/5 the call's emotion timeline, read back from Postgres (the customer only: emotion recognition of "
              "employees is prohibited in the EU, AI Act Art. 5(1)(f); see README, For deployers):")
        rc = print_timeline(settings, call_id, settings.state_dir / "samples" / f"{call_id}.png")
    finally:
        stop_process(worker)
    db = mask("database_url", settings.db_url)
    print(f"""
Next steps
  publish your own recording:   .venv/bin/callstream produce path/to/call.mp4 --call-id my-call-1
  run a worker (or several):    .venv/bin/callstream worker
  print its timeline and plot:  .venv/bin/callstream timeline my-call-1 --plot my-call-1.png
  query in SQL:                 psql "{db}" -c "SELECT * FROM participant_summary"
  stop the embedded stack:      .venv/bin/callstream down""")
    return rc
