"""`callstream generate | bench | reliability`: synthetic calls and the measurements of docs/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from callstream_lab.bench.faults import FAULTS
from callstream_lab.cli.stack import start
from pipeline.cli.base import Handler
from pipeline.cli.ingest import parse_participant
from pipeline.settings import Settings, SettingsError

DEFAULT_SHAPES = ["640x360@24", "1280x720@30"]


def register(sub: Any) -> dict[str, Handler]:
    g = sub.add_parser("generate", help="write a synthetic two-participant call (MP4)")
    g.add_argument("out", help="the MP4 to write")
    g.add_argument("--seconds", type=float, default=20, help="the call's length (default 20)")
    g.add_argument("--size", default="640x360", metavar="WxH", help="the picture's size (default 640x360)")
    g.add_argument("--fps", type=int, default=15, help="frames per second (default 15)")
    rl = sub.add_parser("reliability", help="bad input, memory and fault-injection figures (docs/RELIABILITY.md)")
    rl.add_argument("--parts", default="bad,memory,faults", help="which parts to run, comma-separated (default all: "
                    "bad,memory,faults)")
    rl.add_argument("--code", help="start workers from this checkout (before/after figures)")
    rl.add_argument("--memory-cases", default="5-s chunks,live chunks alone,45-min one-chunk call,"
                                              "2-h audio-only call,8192x8192 frame",
                    help="the memory cases to run, comma-separated (default: all of them)")
    rl.add_argument("--calls", type=int, default=12, help="calls of 20 s in each fault run")
    rl.add_argument("--seeds", type=int, default=5, help="points of progress per fault (one run each)")
    rl.add_argument("--faults", default=",".join(FAULTS[1:]),
                    help=f"which faults, comma-separated, of: {', '.join(FAULTS[1:])}")
    rl.add_argument("--workers", type=int, default=2, choices=range(2, 7), metavar="2-6",
                    help="workers in the consumer group of each fault run")
    rl.add_argument("--timeout", type=float, default=900, help="longest wait for one memory case")
    be = sub.add_parser("bench", help="throughput, latency, scale-out, limits and peers (docs/BENCHMARKS.md); "
                                      "--recording measures your own recordings")
    be.add_argument("--shape", action="append", help="WxH@FPS of the generated workload, repeatable (default "
                                                     f"{' and '.join(DEFAULT_SHAPES)})")
    be.add_argument("--recording", action="append", metavar="FILE",
                    help="measure this recording instead of generated ones, cut as `callstream produce` cuts it; "
                         "repeatable (each is one call; a run cycles through them)")
    be.add_argument("--layout", choices=["dual", "agent", "customer"],
                    help="with --recording: who is where, as produce's --layout (default CALLSTREAM_DEFAULT_LAYOUT)")
    be.add_argument("--participant", action="append", type=parse_participant, metavar="ID:ROLE=FILE[@OFFSET_MS]",
                    help="one participant's recording, as produce's --participant; repeatable, together one call")
    be.add_argument("--compare-photo", action="store_true",
                    help="add the earlier still-photograph workload at each shape as a comparison row (capacity)")
    be.add_argument("--seconds", type=float, default=30, help="length of each generated call")
    be.add_argument("--workers", default="1,2", help="worker counts to compare")
    be.add_argument("--min-wall", type=float, default=30.0, metavar="SECONDS",
                    help="each capacity run publishes enough calls to last at least this long (default 30)")
    be.add_argument("--repeats", type=int, default=3, help="capacity runs per row, for their spread (default 3)")
    be.add_argument("--latency-seconds", type=float, default=40, help="length of the paced latency run")
    be.add_argument("--no-peers", action="store_true", help="skip fer.Video and the naive loop")
    be.add_argument("--code", help="start the workers from this checkout (before/after figures); the in-process "
                                   "limits are left out, as they would measure this checkout's code")
    be.add_argument("--no-latency", action="store_true", help="capacity (and limits) only")
    be.add_argument("--live-calls", type=int, metavar="N",
                    help="the latency run's live calls (default: half the one-worker capacity), so two "
                         "checkouts of different capacity can be compared at the same load")
    be.add_argument("--nets", action="store_true", help="only each built-in net on TorchScript vs ONNX Runtime "
                                                        "(ms per call, output difference); no stack")
    sz = sub.add_parser("size", help="what N concurrent calls need, from the measured figures "
                                     "(docs/OPERATIONS.md, Sizing) or your own recordings' rate")
    sz.add_argument("--calls", type=int, action="append", metavar="N",
                    help="concurrent calls, repeatable (default 100, 500 and 2,000)")
    sz.add_argument("--shape", default="640x360@24", choices=["640x360@24", "1280x720@30"],
                    help="which measured shape's figures (default 640x360@24)")
    sz.add_argument("--participants", type=int, default=1, choices=(1, 2),
                    help="analysed participants per call (2: agents too; default 1, the customer)")
    sz.add_argument("--per-core", type=float, metavar="VIDEO_S_PER_S",
                    help="your recordings' rate per core (`./run bench --recording`), instead of the measured one")
    sz.add_argument("--kbps", type=int, help="your recordings' bitrate, for the Kafka figure (default: the "
                                             "generated call's)")
    sz.add_argument("--write-docs", action="store_true",
                    help="rewrite docs/OPERATIONS.md's generated sizing from the measured figures")
    return {"generate": generate, "bench": bench, "reliability": reliability, "size": size}


def size(settings: Settings, args: argparse.Namespace) -> int:
    from callstream_lab import sizing
    from pipeline.settings import REPO_ROOT

    if args.write_docs:
        changed = sizing.write_docs(REPO_ROOT / "docs" / "OPERATIONS.md")
        print("docs/OPERATIONS.md: sizing " + ("rewritten" if changed else "already current"))
        return 0
    if any(c < 1 for c in args.calls or []) or (args.per_core is not None and args.per_core <= 0) or \
            (args.kbps is not None and args.kbps <= 0):
        raise SettingsError("size: --calls, --per-core and --kbps must be more than 0")
    m = sizing.MEASURED
    shape = m.shape(args.shape)
    print(f"at {round(sizing.HEADROOM * 100)} % of the rates {'you gave' if args.per_core else 'measured'} "
          f"({args.per_core or round(shape.capacity / m.cores, 1)} video-s/s per core, {args.shape}; "
          f"{args.participants} analysed participant(s) per call):")
    for calls in args.calls or [100, 500, 2000]:
        s = sizing.size(calls, shape, args.participants, args.per_core, args.kbps)
        print(f"- {calls:,} calls: {s.load:,.0f} video-s/s; all on CPU {s.cpu_cores:,} cores; workers apart "
              f"{s.worker_cores:,} worker + {s.triton_cores:,} CPU Triton cores (Triton on GPUs: not measured); "
              f"{s.workers:,} workers, {s.partitions:,} partitions; Kafka {s.chunks_per_s:,.0f} chunks/s, "
              f"{s.kafka_mb_s:,.1f} MB/s; Postgres {s.rows_per_s:,} rows/s; workers' memory {s.worker_gb} GB")
    return 0


def generate(settings: Settings, args: argparse.Namespace) -> int:
    from callstream_lab.synth import generate_call
    from pipeline.media.ffmpeg_bin import ffmpeg_exe

    w, h = (int(v) for v in args.size.split("x"))
    out = generate_call(ffmpeg_exe(settings.ffmpeg_binary), Path(args.out), seconds=args.seconds, width=w,
                        height=h, fps=args.fps)
    print(out)
    return 0


def bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.nets:
        from callstream_lab.bench import nets

        print(nets.markdown(nets.compare(settings.model_repository)))
        return 0
    from callstream_lab.bench import workload
    from callstream_lab.bench.main import Plan, markdown
    from callstream_lab.bench.main import bench as run_bench

    workers = [int(w) for w in args.workers.split(",")]
    if args.repeats < 1 or args.min_wall <= 0 or not workers or min(workers) < 1:
        raise SettingsError("bench: --repeats and --workers need 1 or more, --min-wall more than 0")
    plans: list[Plan] = []
    if args.recording or args.participant:
        files = [Path(f) for f in args.recording or []]
        for f in files + [p for _, _, p, _ in args.participant or []]:
            if not f.is_file():
                raise FileNotFoundError(f)
        # Cut first: a file that is not media is refused before anything starts.
        plans.append(Plan(workload.recordings(settings, files, args.layout, args.participant)))
    else:
        workdir = settings.state_dir / "bench"
        workdir.mkdir(parents=True, exist_ok=True)
        for text in args.shape or DEFAULT_SHAPES:
            try:
                shape = workload.Shape.parse(text)
            except ValueError as exc:
                raise SettingsError(f"bench --shape: {exc}") from None
            plans.append(Plan(workload.realistic(settings, workdir, shape, args.seconds)))
            if args.compare_photo:
                plans.append(Plan(workload.photo(settings, workdir, shape, args.seconds), limits=False,
                                  latency=False))
    for plan in plans:
        plan.limits = plan.limits and not args.code
        plan.latency = plan.latency and not args.no_latency
        plan.live_calls = args.live_calls
    try:
        start(settings)
        report = run_bench(settings, plans, workers, args.min_wall, args.repeats, args.latency_seconds,
                           not args.no_peers, Path(args.code) if args.code else None)
    finally:
        for plan in plans:
            plan.work.remove_chunks()
    print()
    print(markdown(report))
    return 0


def reliability(settings: Settings, args: argparse.Namespace) -> int:
    from callstream_lab.bench.reliability import run

    start(settings)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise SystemExit(f"error: --faults: unknown {', '.join(unknown)}; known: {', '.join(FAULTS[1:])}")
    report, ok = run(settings, args.parts.split(","), Path(args.code) if args.code else None,
                     args.memory_cases.split(","), args.calls, args.timeout, faults=faults, seeds=args.seeds,
                     workers=args.workers)
    print()
    print(report)
    return 0 if ok else 1
