"""`callstream`: the command line. Each subcommand is a thin shell over a module that does the work."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from pathlib import Path

from pipeline.cli import models
from pipeline.settings import Settings, SettingsError, mask


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.modelbuild.build import build_all, is_built
    from pipeline.stack.control import up

    if not settings.triton_url and not is_built(settings.model_repository):
        print("building model artifacts from the installed packages ...")
        build_all(settings.model_repository)
    up(settings)
    _prepare(settings)
    print(f"Kafka {settings.bootstrap_servers} | S3 {settings.s3_url} | Triton {settings.triton_grpc_url} | "
          f"Postgres {mask('database_url', settings.db_url)}")
    return 0


def _prepare(settings: Settings) -> None:
    from pipeline.ingest.topics import ensure_topics
    from pipeline.store.db import ensure_schema

    applied = ensure_schema(settings)
    if applied:
        print(f"  schema migrations applied: {applied}")
    ensure_topics(settings)


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.stack.control import down

    down(settings)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Services, then whether the pipeline keeps up: lag per partition, DLQ depth, calls in progress.
    Each part says why it is unavailable instead of failing the whole command."""
    from pipeline.stack.control import status

    print("services (embedded stack)")
    for name, pid in status(settings).items():
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


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    """Live alerts as they are published (the topic, not the table: what a supervisor's screen sees)."""
    import json

    from pipeline.ingest.topics import tail

    def show(value: bytes | None) -> None:
        try:
            a = json.loads(value or b"")
            print(f"{a['published_at'][:19]}  {a['call_id']}  {a['participant_id']} ({a['role']})  {a['rule']}  "
                  f"{a['window']['start_ms'] / 1000:.0f}-{a['window']['end_ms'] / 1000:.0f}s  "
                  f"{json.dumps(a['values'])}", flush=True)
        except (ValueError, KeyError, TypeError):
            print(f"(not an alert: {value[:80] if value else value!r})", flush=True)

    try:
        tail(settings, settings.alerts_topic, show, from_start=args.from_start, limit=args.max)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_settings(settings: Settings, args: argparse.Namespace) -> int:
    for env, value, doc in settings.describe():
        print(f"{env:<34} {value:<40} {doc}")
    return 0


def parse_participant(spec: str) -> tuple[str, str, Path, int]:
    """ID:ROLE=FILE[@OFFSET_MS] -> (id, role, file, offset)."""
    from pipeline.contract import PARTICIPANT_ID, ROLES

    who, sep, rest = spec.partition("=")
    pid, _, role = who.rpartition(":")
    if not sep or not pid or role not in ROLES or not PARTICIPANT_ID.match(pid):
        raise argparse.ArgumentTypeError(f"--participant {spec!r}: expected ID:ROLE=FILE[@OFFSET_MS] with ROLE one of "
                                         f"{', '.join(ROLES)} and ID matching {PARTICIPANT_ID.pattern}")
    path, at, offset = rest.rpartition("@") if "@" in rest and rest.rpartition("@")[2].isdigit() else (rest, "", "0")
    return pid, role, Path(path), int(offset)


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipeline.ingest.producer import (
        PublishError,
        Upload,
        chime_uploads,
        participant_uploads,
        publish_uploads,
        recording_uploads,
    )

    sources = sum(bool(x) for x in (args.recording, args.participant, args.chime))
    if sources != 1:
        print("error: give one of: a RECORDING (with --layout), --participant ID:ROLE=FILE[@OFFSET_MS] "
              "(repeatable), or --chime FOLDER", file=sys.stderr)
        return 2
    uploads: list[Upload] = []
    if args.recording:
        uploads = recording_uploads(settings, Path(args.recording), args.layout, args.chunk_seconds)
    elif args.participant:
        for pid, role, path, offset in args.participant:
            uploads += participant_uploads(settings, pid, role, path, offset, args.chunk_seconds)
    else:
        roles = dict(args.role or [])
        uploads = chime_uploads(settings, Path(args.chime), roles, mixed_audio=args.mixed_audio)
    bar = tqdm(desc=f"publishing {args.call_id}", unit="chunk", total=len(uploads))
    try:
        sent = publish_uploads(settings, args.call_id, uploads, realtime=args.realtime,
                               on_chunk=lambda meta, size: bar.update(1))
    except PublishError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    claims = sum(1 for m in sent if m.claim_check)
    who = sorted({f"{m.participant_id} ({m.role})" for m in sent if m.participant_id})
    print(f"published {len(sent)} chunks of call {args.call_id} to {settings.chunks_topic}"
          + (f" ({claims} through the claim check)" if claims else "")
          + (f"; participants: {', '.join(who)}" if who else ""))
    unanalysed = sorted({m.role for m in sent if m.role and m.role not in settings.roles})
    if unanalysed:
        print(f"note: roles {', '.join(unanalysed)} are not in CALLSTREAM_ANALYSED_ROLES; their media will not "
              "be analysed (see README, For deployers)")
    return 0


def _role_map(spec: str) -> tuple[str, str]:
    from pipeline.contract import ROLES

    pid, _, role = spec.partition("=")
    if role not in ROLES or not pid:
        raise argparse.ArgumentTypeError(f"--role {spec!r}: expected ATTENDEE=ROLE, ROLE one of {', '.join(ROLES)}")
    return pid, role


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import os
    import threading

    import faust

    from pipeline.worker.app import EXIT_CODE, create_app

    _prepare(settings)
    app = create_app(settings)

    class Worker(faust.Worker):
        """Leaves the group on SIGTERM like any Faust worker, but never takes longer than the grace
        period: a decode or an S3 read blocked in a thread must not keep a stopping worker alive."""

        def _on_sigterm(self) -> None:
            def hard_exit() -> None:
                logging.getLogger("callstream.worker").warning(
                    "still stopping after %.0fs; exiting now (unfinished chunks are redelivered)",
                    settings.stop_grace_s)
                logging.shutdown()
                os._exit(EXIT_CODE["code"])

            timer = threading.Timer(settings.stop_grace_s, hard_exit)
            timer.daemon = True
            timer.start()
            super()._on_sigterm()

    worker = Worker(app, loglevel=args.loglevel.upper())
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    logging.shutdown()
    # Threads still blocked in I/O would hold interpreter exit; everything worth keeping is committed.
    os._exit(EXIT_CODE["code"])


def cmd_timeline(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.report import format_summary, format_timeline, plot_timeline
    from pipeline.store.db import sync_engine
    from pipeline.store.queries import timeline, track_summary

    engine = sync_engine(settings)
    rows = timeline(engine, args.call_id)
    if not rows:
        print(f"no segments for call {args.call_id!r} yet", file=sys.stderr)
        return 1
    print(format_timeline(rows))
    print(format_summary(track_summary(engine, args.call_id)))
    if args.plot:
        print(f"plot written to {plot_timeline(rows, Path(args.plot), f'call {args.call_id}')}")
    return 0


def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.media.ffmpeg_bin import ffmpeg_exe
    from pipeline.media.synth import generate_call

    w, h = (int(v) for v in args.size.split("x"))
    out = generate_call(ffmpeg_exe(settings.ffmpeg_binary), Path(args.out), seconds=args.seconds, width=w,
                        height=h, fps=args.fps)
    print(out)
    return 0


def wait_for_call(settings: Settings, call_id: str, chunks: int, timeout: float, desc: str = "") -> tuple[int, int]:
    from tqdm import tqdm

    from pipeline.store.db import sync_engine
    from pipeline.store.queries import progress

    engine = sync_engine(settings)
    bar = tqdm(total=chunks, desc=desc or f"processing {call_id}", unit="chunk")
    deadline = time.time() + timeout
    done = failed = 0
    while time.time() < deadline:
        done, failed = progress(engine, call_id)
        bar.n = done + failed
        bar.refresh()
        if done + failed >= chunks:
            break
        time.sleep(0.5)
    bar.close()
    engine.dispose()
    return done, failed


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.ingest.producer import publish_recording

    print("1/5 starting the embedded stack (SeaweedFS S3, tansu Kafka API, Postgres, Triton) ...")
    cmd_up(settings, args)
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
        args.call_id, args.plot = call_id, str(settings.state_dir / "samples" / f"{call_id}.png")
        rc = cmd_timeline(settings, args)
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


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.nets:
        from pipeline.bench import nets

        print(nets.markdown(nets.compare(settings.model_repository)))
        return 0
    from pipeline.bench.main import bench, markdown

    cmd_up(settings, args)
    report = bench(settings, args.shape, args.calls, args.seconds, [int(w) for w in args.workers.split(",")],
                   args.latency_seconds, not args.no_peers)
    print()
    print(markdown(report))
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.ingest import dlq

    letters = dlq.select(dlq.read_all(settings), args.reason, args.call)
    if args.dlq_cmd == "replay":
        n = dlq.replay(settings, letters)
        print(f"replayed {n} dead-lettered chunks to {settings.chunks_topic}")
        return 0
    for d in letters:
        print(dlq.describe(d))
    print(f"{len(letters)} dead-lettered chunks in {settings.dlq_topic}")
    return 0


def cmd_reliability(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.bench.reliability import run

    cmd_up(settings, args)
    report = run(settings, args.parts.split(","), Path(args.code) if args.code else None,
                 args.memory_cases.split(","), args.calls, args.timeout)
    print()
    print(report)
    return 0


def cmd_forget(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.ingest.claimcheck import ClaimCheckStore, call_prefix, dead_letter_key
    from pipeline.store import erasure
    from pipeline.store.db import sync_engine

    engine = sync_engine(settings)
    if args.lift:
        n = erasure.lift(engine, args.call_id, args.participant)
        print(f"tombstone of {args.call_id}{'/' + args.participant if args.participant else ''} "
              f"{'removed: re-published chunks will be processed again' if n else 'not found'}")
        return 0
    gone = erasure.forget(engine, args.call_id, args.participant)
    objects = 0
    if not args.participant:
        claims = ClaimCheckStore(settings)
        prefix = f"s3://{settings.claim_check_bucket}/{call_prefix(args.call_id)}"
        objects += claims.delete_prefix(call_prefix(args.call_id))
        for uri in (u for u in gone.claim_checks if not u.startswith(prefix)):  # those are gone already
            try:
                claims.delete(uri)
                objects += 1
            except Exception as exc:  # another bucket or already gone: say so, keep going
                print(f"  could not delete {uri}: {exc}", file=sys.stderr)
        for source in gone.dead_letter_sources:
            objects += claims.delete_prefix(dead_letter_key(source))
    left = erasure.remaining(engine, args.call_id)
    what = f"participant {args.participant} of call {args.call_id}" if args.participant else f"call {args.call_id}"
    print(f"forgot {what}: {gone.segments} segment rows, {gone.ledger_rows} ledger rows, {gone.calls} call rows, "
          f"{objects} stored objects; a tombstone refuses its chunks if they are delivered again "
          f"(`callstream forget {args.call_id} --lift` to allow it)")
    if not args.participant and any(left.values()):
        print(f"rows still present: {left}", file=sys.stderr)
        return 1
    print(f"note: dead letters of this call on {settings.dlq_topic} expire with the topic's retention")
    return 0


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    import time as _time

    from pipeline.ingest.claimcheck import DEAD_LETTER_PREFIX, ClaimCheckStore
    from pipeline.store import erasure
    from pipeline.store.db import sync_engine

    engine = sync_engine(settings)
    claims = ClaimCheckStore(settings)
    cleared, removed, failures = [], 0, 0
    # Media of done chunks is not needed once their rows are committed: whatever a failed delete left
    # (unless the operator keeps claim-check objects on purpose).
    for ledger_id, uri in erasure.done_media(engine) if settings.delete_claim_checks else []:
        try:
            removed += claims.remove(uri)
            cleared.append(ledger_id)
        except Exception as exc:
            failures += 1
            print(f"  could not delete {uri}: {exc}", file=sys.stderr)
    if cleared:
        erasure.mark_media_deleted(engine, cleared)
    if settings.delete_claim_checks:
        print(f"media of done chunks: {removed} claim-check objects deleted "
              f"({len(cleared) - removed} were gone already)")
    else:
        print("CALLSTREAM_DELETE_CLAIM_CHECKS is off: claim-check objects of done chunks are kept")
    stale = erasure.stale_dead_letter_media(engine, settings.dlq_media_hours)
    deleted = []
    for ledger_id, uri in stale:
        try:
            claims.delete(uri)
            deleted.append(ledger_id)
        except Exception as exc:
            failures += 1
            print(f"  could not delete {uri}: {exc}", file=sys.stderr)
    if deleted:
        erasure.mark_media_deleted(engine, deleted)
    parked = claims.delete_prefix(DEAD_LETTER_PREFIX, older_than=_time.time() - settings.dlq_media_hours * 3600)
    print(f"dead-letter media older than {settings.dlq_media_hours:g} h: {len(deleted)} claim-check objects, "
          f"{parked} parked payloads deleted")
    if settings.retention_days <= 0:
        print("CALLSTREAM_RETENTION_DAYS is 0: timelines and ledger rows are kept")
    else:
        counts = erasure.apply_retention(engine, settings.retention_days)
        print(f"older than {settings.retention_days} days deleted: "
              + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if failures:
        print(f"{failures} object(s) could not be deleted: run `callstream retention apply` again when the "
              "object store answers", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callstream", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start the embedded stack (what settings do not point elsewhere)")
    sub.add_parser("down", help="stop the embedded stack")
    sub.add_parser("status", help="services, consumer lag per partition, dead letters, calls in progress")
    al = sub.add_parser("alerts", help="live alerts: `alerts tail` prints them as they are published")
    al.add_argument("alerts_cmd", choices=["tail"])
    al.add_argument("--from-start", action="store_true", help="from the topic's beginning, not only new ones")
    al.add_argument("--max", type=int, help="exit after this many alerts")
    sub.add_parser("settings", help="print every setting, its value and what it does")
    sub.add_parser("demo", help="start everything, process a generated call, print its timeline")
    models.register(sub)
    pr = sub.add_parser("produce", help="cut a recording into chunks and publish them")
    pr.add_argument("recording", nargs="?", help="a whole-call recording (v1 layouts: see --layout)")
    pr.add_argument("--call-id", required=True)
    pr.add_argument("--layout", choices=["dual", "agent", "customer"])
    pr.add_argument("--participant", action="append", type=parse_participant, metavar="ID:ROLE=FILE[@OFFSET_MS]",
                    help="one participant's own recording (a track file, one direction of a phone call), placed "
                         "OFFSET_MS into the call; repeatable")
    pr.add_argument("--chime", metavar="FOLDER",
                    help="a Chime-style capture folder of per-attendee <UTC time>-<attendee>.mp4 chunk files")
    pr.add_argument("--role", action="append", type=_role_map, metavar="ATTENDEE=ROLE",
                    help="with --chime: an attendee's role (others: other, which is not analysed by default)")
    pr.add_argument("--mixed-audio", action="store_true",
                    help="with --chime: publish the mixed-audio files too, as participant 'mixed' (role other)")
    pr.add_argument("--chunk-seconds", type=float)
    pr.add_argument("--realtime", action="store_true", help="pace chunks as a live recorder would")
    w = sub.add_parser("worker", help="run a Faust worker")
    w.add_argument("--loglevel", default="info")
    t = sub.add_parser("timeline", help="print a call's timeline; --plot writes a PNG")
    t.add_argument("call_id")
    t.add_argument("--plot")
    g = sub.add_parser("generate", help="write a synthetic two-participant call (MP4)")
    g.add_argument("out")
    g.add_argument("--seconds", type=float, default=20)
    g.add_argument("--size", default="640x360")
    g.add_argument("--fps", type=int, default=15)
    dl = sub.add_parser("dlq", help="list dead-lettered chunks; `dlq replay` re-publishes them")
    dl.add_argument("dlq_cmd", nargs="?", choices=["list", "replay"], default="list")
    dl.add_argument("--reason", help="only this dlq-reason")
    dl.add_argument("--call", help="only this call id")
    rl = sub.add_parser("reliability", help="bad input, memory and fault-injection figures (docs/RELIABILITY.md)")
    rl.add_argument("--parts", default="bad,memory,faults")
    rl.add_argument("--code", help="start workers from this checkout (before/after figures)")
    rl.add_argument("--memory-cases", default="5-s chunks,live chunks alone,45-min one-chunk call,"
                                              "2-h audio-only call,8192x8192 frame")
    rl.add_argument("--calls", type=int, default=8, help="calls of 20 s in the fault-injection load")
    rl.add_argument("--timeout", type=float, default=900, help="longest wait for one memory case")
    fg = sub.add_parser("forget", help="erase a call (or one participant): rows, ledger, stored objects; tombstone")
    fg.add_argument("call_id")
    fg.add_argument("--participant", help="only this participant (v1 chunks: agent or customer)")
    fg.add_argument("--lift", action="store_true", help="remove the tombstone: allow a re-delivery to be processed")
    rt = sub.add_parser("retention", help="`retention apply`: delete what is older than the retention settings")
    rt.add_argument("retention_cmd", choices=["apply"])
    be = sub.add_parser("bench", help="throughput, latency, scale-out, limits and peers (docs/BENCHMARKS.md)")
    be.add_argument("--shape", action="append", help="WxH@FPS, repeatable (default 640x360@15 and 1280x720@30)")
    be.add_argument("--calls", type=int, default=6, help="calls per capacity run")
    be.add_argument("--seconds", type=float, default=30, help="length of each generated call")
    be.add_argument("--workers", default="1,2", help="worker counts to compare")
    be.add_argument("--latency-seconds", type=float, default=40, help="length of the paced latency run")
    be.add_argument("--no-peers", action="store_true", help="skip fer.Video and the naive loop")
    be.add_argument("--nets", action="store_true", help="only each built-in net on TorchScript vs ONNX Runtime "
                                                        "(ms per call, output difference); no stack")
    return p


COMMANDS = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "settings": cmd_settings, "demo": cmd_demo,
            "models": models.run, "produce": cmd_produce, "worker": cmd_worker, "timeline": cmd_timeline,
            "generate": cmd_generate, "bench": cmd_bench, "dlq": cmd_dlq,
            "reliability": cmd_reliability, "forget": cmd_forget, "retention": cmd_retention, "alerts": cmd_alerts}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "bench" and not args.shape:
        args.shape = ["640x360@15", "1280x720@30"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "botocore", "urllib3", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from pipeline.alerts.rules import RuleError
    from pipeline.modelbuild.faceapi import ConversionError
    from pipeline.serving.evaluate import DatasetError
    from pipeline.serving.manifest import ManifestError

    try:
        settings = Settings.from_env()
        return COMMANDS[args.cmd](settings, args)
    except (SettingsError, RuleError, ManifestError, DatasetError, ConversionError) as exc:  # one line each
        print(f"error: {exc}", file=sys.stderr)
        return 2


