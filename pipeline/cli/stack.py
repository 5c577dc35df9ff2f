"""`callstream up | down | status | settings | demo`: the embedded stack and a look at it."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from pipeline.cli.base import Handler
from pipeline.cli.calls import print_timeline, wait_for_call
from pipeline.settings import Settings, mask


def register(sub: Any) -> dict[str, Handler]:
    sub.add_parser("up", help="start the embedded stack (what settings do not point elsewhere) and apply the "
                              "schema migrations")
    sub.add_parser("down", help="stop the embedded stack")
    sub.add_parser("status", help="services, consumer lag per partition, dead letters, calls in progress")
    sub.add_parser("settings", help="print every setting, its value and what it does")
    sub.add_parser("demo", help="start everything, process a generated call, print its timeline")
    return {"up": up, "down": down, "status": status, "settings": show_settings, "demo": demo}


def start(settings: Settings) -> None:
    """The embedded stack up, the schema migrated and the topics there: what `up`, `demo` and the lab
    commands start from."""
    from pipeline.modelbuild.build import build_all, is_built
    from pipeline.stack import control

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
        print(f"  schema migrations applied: {applied}")
    ensure_topics(settings)


def down(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.stack import control

    control.down(settings)
    return 0


def status(settings: Settings, args: argparse.Namespace) -> int:
    """Services, then whether the pipeline keeps up: lag per partition, DLQ depth, calls in progress.
    Each part says why it is unavailable instead of failing the whole command."""
    from pipeline.stack import control

    print("services (embedded stack)")
    for name, pid in control.status(settings).items():
        print(f"  {name:<14} {'running, pid ' + str(pid) if pid else 'stopped'}")
    try:
        from pipeline.ingest.lag import group_lag, topic_depth

        lags = group_lag(settings)
        known = [p.lag for p in lags if p.lag is not None]
        untrusted = [p.partition for p in lags if not p.trusted]
        total = f"at least {sum(known)}" if untrusted else str(sum(known))
        print(f"consumer group {settings.app_id} on {settings.chunks_topic}: lag {total}")
        print(f"  {'partition':>9} {'committed':>10} {'end':>8} {'lag':>6}")
        for p in lags:
            committed = "-" if p.committed is None else str(p.committed)
            print(f"  {p.partition:>9} {committed:>10} {p.end:>8} {'?' if p.lag is None else p.lag:>6}")
        if untrusted:
            print(f"  ? the broker reports end offsets below the group's committed offsets on partition(s) "
                  f"{', '.join(map(str, untrusted))}: their lag cannot be computed from offsets")
        print(f"dead letters on {settings.dlq_topic}: {topic_depth(settings, settings.dlq_topic)}")
    except Exception as exc:
        print(f"Kafka at {settings.bootstrap_servers} unavailable: {type(exc).__name__}: {exc}")
    try:
        from pipeline.store.db import sync_engine
        from pipeline.store.queries import in_progress

        engine = sync_engine(settings)
        try:
            calls = in_progress(engine)
        finally:
            engine.dispose()
        print(f"calls in progress: {len(calls)}")
        for c in calls[:20]:
            until = "-" if c["analysed_until_s"] is None else f"{float(c['analysed_until_s']):.0f}s"
            print(f"  {c['call_id']:<40} {c['chunks_done']:>4} chunks done, {c['chunks_failed']:>3} failed, "
                  f"analysed until {until}, {c['participants']} participant(s)")
    except Exception as exc:
        print(f"Postgres unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return 0


def show_settings(settings: Settings, args: argparse.Namespace) -> int:
    for env, value, doc in settings.describe():
        print(f"{env:<34} {value:<40} {doc}")
    return 0


def demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.ingest.producer import publish_recording

    print("1/5 starting the embedded stack (SeaweedFS S3, tansu Kafka API, Postgres, Triton) ...")
    start(settings)
    print("2/5 starting a worker (log: .callstream/logs/worker-demo.log) ...")
    from pipeline.stack.procs import start_worker_process, stop_process

    worker = start_worker_process(settings.state_dir, "worker-demo")
    try:
        print("3/5 generating a 20-second sample call (two participants, faces and speech) ...")
        from pipeline.media.ffmpeg_bin import ffmpeg_exe
        from pipeline.media.synth import generate_call

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
  query in SQL:                 psql "{db}" -c "SELECT * FROM call_participant_summary"
  stop the embedded stack:      .venv/bin/callstream down""")
    return rc
