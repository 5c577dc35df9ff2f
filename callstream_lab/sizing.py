"""Sizing from measured figures: the one place docs/OPERATIONS.md's sizing comes from.

`MEASURED` holds the figures of docs/BENCHMARKS.md that sizing needs, each with the line of BENCHMARKS.md
it is read from; tests/unit/test_sizing_docs.py checks every one is on that line, and that each
generated block of OPERATIONS.md (between `<!-- sizing:NAME -->` and `<!-- /sizing -->`) is what
`blocks()` renders from them, so the two documents cannot disagree. After a new benchmark run: update
`MEASURED`, then `./run size --write-docs`. `./run size --calls N` sizes a deployment, from these
figures or from a per-core rate of one's own recordings (`--per-core`, from `./run bench --recording`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

HEADROOM = 0.5        # run at half the measured capacity: flat latency, and room for a machine to fail
CHUNK_S = 5.0         # the default chunk length
MACHINE_CORES = 16    # the machine size the worked sizing counts in
WORKER_CORES = 2      # one worker per this many cores (BENCHMARKS: two workers on two cores do not add)


@dataclass(frozen=True)
class Shape:
    """What one worker with CPU Triton did on the benchmark machine at one picture shape."""
    name: str
    capacity: float          # video-s/s, one worker, Triton and the services on the machine's cores
    worker_ms: float         # CPU per video-second: the worker with its ffmpeg children (mostly decoding)
    model_ms: float          # CPU per video-second: Triton
    services_ms: float       # CPU per video-second: broker, object store, Postgres, the harness
    live_calls: int          # the half-load latency run's live calls
    p50_ms: int              # publication -> rows at half load
    p95_ms: int
    alerts_p50_s: float      # live alert, recorded -> published, at half load
    alerts_p95_s: float
    db_ms: int               # database time per chunk at capacity


@dataclass(frozen=True)
class Measured:
    date: str
    commit: str
    cores: int
    shapes: tuple[Shape, ...]
    worker_rss_mb: int
    triton_rss_gb: float
    busy_share: float           # of the quiet-day figures, on a day the hypervisor took 40 % of the cores
    words_capacity: tuple[float, float]    # capacity with CALLSTREAM_WORDS on, as a share of off
    words_triton_ms: tuple[int, int]       # Triton CPU per video-second with words on
    kbps: int                   # the generated 640x360 MP4 call's bitrate (3,642,503 B in 30 s)
    speech_stub_mb: tuple[int, int]        # the `speech` model's stub, PSS, before and after its first request
    triton_words_gb: tuple[float, float]   # Triton's peak RSS with the words model's two instances loaded
    speech_capacity: tuple[float, float]   # capacity measuring agents' talk (the speech model), as a share of off

    def shape(self, name: str) -> Shape:
        return next(s for s in self.shapes if s.name == name)


MEASURED = Measured(
    date="2026-12-05", commit="bfd8428", cores=2,
    shapes=(Shape("640x360@24", 50.3, 24, 10, 5, 25, 887, 3032, 6.6, 9.0, 21),
            Shape("1280x720@30", 25.4, 58, 10, 9, 13, 868, 1637, 5.6, 6.7, 17)),
    worker_rss_mb=446, triton_rss_gb=1.22, busy_share=0.6, words_capacity=(0.31, 0.32),
    words_triton_ms=(76, 84), kbps=971, speech_stub_mb=(19, 361),
    triton_words_gb=(1.61, 1.70), speech_capacity=(0.90, 0.98))

def benchmark_phrases(m: Measured = MEASURED) -> list[str]:
    """What docs/BENCHMARKS.md must say, word for word (whitespace aside), for `m` to be its figures."""
    s360, s720 = m.shapes
    return [
        f"on this project's machine ({m.cores} cores, 24 GiB, no GPU) on {m.date}",
        f"at commit {m.commit}",
        f"| capacity, one worker, video-s/s (median run; both runs) | **{s360.capacity}** (",
        f"| **{s720.capacity}** (",
        f"| latency at half load ({s360.live_calls} / {s720.live_calls} live calls): p50 / p95 publication → rows | "
        f"{s360.p50_ms} / {s360.p95_ms} ms | {s720.p50_ms} / {s720.p95_ms} ms |",
        f"| live alerts at half load, recorded → published, p50 / p95 | {s360.alerts_p50_s} / {s360.alerts_p95_s} s | "
        f"{s720.alerts_p50_s} / {s720.alerts_p95_s} s |",
        "| per chunk at capacity: decode / inference / db ms | ",
        f" / {s360.db_ms} | ", f" / {s720.db_ms} |",
        f"| worker peak RSS, Triton peak RSS | {m.worker_rss_mb} MB (",
        f"), {m.triton_rss_gb} GB |",
        f"**{s360.worker_ms} ms decoding with the worker, {s360.model_ms} ms in the model and {s360.services_ms} ms "
        "in the services**",
        f"At 1280x720 (26.0 s): {s720.worker_ms}, {s720.model_ms} and {s720.services_ms} ms",
        f"this machine gave about {round(m.busy_share * 100)} % of the figures",
        f"Words cost **{m.words_capacity[0]}-{m.words_capacity[1]}x** the capacity",
        f"takes {m.words_triton_ms[0]}-{m.words_triton_ms[1]} ms of Triton's CPU per second of call",
        f"({m.kbps} kbit/s)",
        f"Triton's peak RSS: {m.triton_words_gb[0]:.2f}, 1.65 and {m.triton_words_gb[1]:.2f} GB",
        f"Measuring the agent's talk costs **{m.speech_capacity[0]:.2f}-{m.speech_capacity[1]:.2f}x** the capacity",
        f"{m.speech_stub_mb[0]} MB of memory (PSS) until its first request, {m.speech_stub_mb[1]} MB after",
    ]


@dataclass(frozen=True)
class Sizing:
    """What C concurrent calls need, at HEADROOM of the measured rates."""
    calls: int
    participants: int
    load: float              # video-s/s offered
    cpu_cores: int           # everything on CPU, as measured: workers, Triton and the services together
    worker_cores: int        # workers alone (decoding), Triton elsewhere
    triton_cores: int        # a CPU Triton of its own
    workers: int
    partitions: int
    chunks_per_s: float
    kafka_mb_s: float
    rows_per_s: int
    worker_gb: float


def size(calls: int, shape: Shape, participants: int = 1, per_core: float | None = None, kbps: int | None = None,
         m: Measured = MEASURED) -> Sizing:
    """Pure arithmetic on the figures: a live call offers one video-second per second per analysed
    participant (both share one picture and one stereo track, but each is analysed on its own)."""
    load = float(calls * participants)
    rate = per_core if per_core is not None else shape.capacity / m.cores
    cpu = math.ceil(load / (rate * HEADROOM))
    scale = shape.capacity / m.cores / rate    # recordings of one's own cost this much more than the measured ones
    worker = math.ceil(load * shape.worker_ms * scale / 1000 / HEADROOM)
    triton = math.ceil(load * shape.model_ms * scale / 1000 / HEADROOM)
    workers = max(1, math.ceil(worker / WORKER_CORES))
    partitions = max(12, 12 * math.ceil(workers / 12))
    chunks = calls / CHUNK_S
    return Sizing(calls, participants, load, cpu, worker, triton, workers, partitions, chunks,
                  calls * (kbps or m.kbps) / 8 / 1000, calls * participants, round(workers * m.worker_rss_mb / 1000, 1))


def _n(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 or float(x).is_integer() else f"{x:,.1f}"


def table(m: Measured = MEASURED, calls: tuple[int, ...] = (100, 500, 2000, 10_000)) -> str:
    rows = [_row("concurrent calls (customer analysed)", *(f"{c:,}" for c in calls)), "|---|" + "---|" * len(calls)]
    sized = {shape.name: [size(c, shape, m=m) for c in calls] for shape in m.shapes}
    for shape in m.shapes:
        label = shape.name.replace("@", " @ ") + " fps"
        ss = sized[shape.name]
        rows.append(_row(f"{label}, all on CPU: cores (machines of {MACHINE_CORES})",
                         *(f"{s.cpu_cores:,} ({math.ceil(s.cpu_cores / MACHINE_CORES)})" for s in ss)))
        rows.append(_row(f"{label}, workers apart: worker cores + CPU Triton cores",
                         *(f"{s.worker_cores:,} + {s.triton_cores:,}" for s in ss)))
        rows.append(_row(f"{label}, **estimate** with Triton on GPUs: worker cores",
                         *(f"{s.worker_cores:,}" for s in ss)))
    first = sized[m.shapes[0].name]
    rows.append(_row("workers at 640x360 (one per 2 cores) / chunk topic partitions",
                     *(f"{x.workers:,} / {x.partitions:,}" for x in first)))
    rows.append(_row("Kafka at 640x360: chunks/s, MB/s in (before replication)",
                     *(f"{_n(x.chunks_per_s)}, {_n(x.kafka_mb_s)}" for x in first)))
    rows.append(_row("Postgres: segment rows/s (and as many pieces)", *(f"{x.rows_per_s:,}" for x in first)))
    rows.append(_row("worker memory at 640x360, GB in all", *(f"{x.worker_gb:,}" for x in first)))
    return "\n".join(rows)


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def figures_table(m: Measured = MEASURED) -> str:
    s360, s720 = m.shapes

    def both(f: object) -> tuple[str, str]:
        return f(s360), f(s720)   # type: ignore[operator]

    return "\n".join([
        _row("", s360.name, s720.name), "|---|---|---|",
        _row("capacity, video-s/s (one live call = 1 video-s per s per analysed participant)",
             *both(lambda s: s.capacity)),
        _row("per core", *both(lambda s: f"{s.capacity / m.cores:.1f}")),
        _row("CPU per video-second: worker with ffmpeg (decoding) / Triton / services, ms",
             *both(lambda s: f"{s.worker_ms} / {s.model_ms} / {s.services_ms}")),
        _row(f"at half load ({s360.live_calls} / {s720.live_calls} live calls): publication → rows p50 / p95",
             *both(lambda s: f"{s.p50_ms / 1000:.1f} / {s.p95_ms / 1000:.1f} s")),
        _row("at half load: live alert, recorded → published, p50 / p95",
             *both(lambda s: f"{s.alerts_p50_s} / {s.alerts_p95_s} s")),
        _row("database time per 5-s chunk", *both(lambda s: f"{s.db_ms} ms")),
    ])


def blocks(m: Measured = MEASURED) -> dict[str, str]:
    """The generated blocks of docs/OPERATIONS.md, by name."""
    s360, s720 = m.shapes
    per360, per720 = s360.capacity / m.cores, s720.capacity / m.cores
    words = f"{m.words_capacity[0]}-{m.words_capacity[1]}x"
    whisper = f"{m.words_triton_ms[0]}-{m.words_triton_ms[1]} ms"
    rows_2000 = 2000 * 8 * 3600 / 1e6   # one row per analysed participant-second, 8 busy hours
    return {
        "figures": f"""\
Measured by `./run bench --no-peers --repeats 2` on {m.date} (commit {m.commit}; docs/BENCHMARKS.md, "Today's
figures"), one worker with CPU Triton, the broker, object store and Postgres on one {m.cores}-core machine, the
realistic generated workload (faces that move, MP4 and WebM with key frames every 2-4 s, the customer
analysed):

{figures_table(m)}

Peak memory: a worker {m.worker_rss_mb} MB (30-s decode windows: whatever the chunk length). Triton
{m.triton_rss_gb} GB with the `emotion` model alone (the run above predates the other two models);
{m.triton_words_gb[0]:.2f}-{m.triton_words_gb[1]:.2f} GB with the `words` model's two instances loaded
(docs/BENCHMARKS.md, "Words: the cost"); the `speech` model's stub adds {m.speech_stub_mb[0]} MB until a
worker measures talk with it, {m.speech_stub_mb[1]} MB after; one more stub per installed model version.

On a day the hypervisor took 40 % of the cores the same code gave about {round(m.busy_share * 100)} % of
these figures. With `CALLSTREAM_WORDS=true` capacity is {words} (Whisper on
the CPU: {whisper} of Triton's CPU per video-second); measuring agents' talk
(`CALLSTREAM_SPEECH_ACTIVITY_ROLES=agent`) {m.speech_capacity[0]:.2f}-{m.speech_capacity[1]:.2f}x.""",
        "worked": f"""\
At {round(HEADROOM * 100)} % of the measured rates (flat latency, and room for a machine to fail), from the
figures above (`./run size --calls N` prints one column; `--per-core` takes your own recordings' rate from
`./run bench --recording`, `--participants 2` when agents are analysed too):

{table(m)}

- *All on CPU* is the measured machine scaled: workers, Triton and the services sharing the cores, as
  `./run bench` ran them ({per360:.1f} and {per720:.1f} video-s/s per core).
- *Workers apart*: the same CPU split by what each part used per video-second (workers
  {s360.worker_ms} / {s720.worker_ms} ms, Triton {s360.model_ms} ms), with the broker, object store and
  Postgres on machines of their own (not counted).
- *Estimate with Triton on GPUs*: the worker cores alone; **GPU throughput was not measured** (no GPU
  was lent to this project): each call asks Triton for 2 detector frames, up to 2 expression crops and
  1 s of VAD per second, so 2,000 calls are 4,000 frames/s. Run `./run bench` against your GPU Triton
  (`CALLSTREAM_TRITON_URL`) and divide to count replicas.
- Kafka: bytes at the generated 640x360 call's {m.kbps} kbit/s, times the replication factor on disk;
  chunks above 900 kB go through the claim check (the object store carries them, the brokers only
  their headers). Create the chunk topic with at least as many partitions as workers
  (`CALLSTREAM_PARTITIONS`).
- Postgres: one segment row per analysed participant-second and as many `segment_pieces` rows, written
  as one transaction per chunk ({s720.db_ms}-{s360.db_ms} ms each here); at 8 busy hours a day 2,000
  calls are {rows_2000:.0f} M rows a day: partition `emotion_segments` by day, bound it with
  `CALLSTREAM_RETENTION_DAYS`, and route analysts to a replica.""",
    }


def render(doc: str, m: Measured = MEASURED) -> str:
    """`doc` with every generated block replaced by what `blocks()` renders now."""
    out = doc
    for name, body in blocks(m).items():
        start, end = f"<!-- sizing:{name} -->\n", "<!-- /sizing -->"
        a = out.index(start) + len(start)
        b = out.index(end, a)
        out = out[:a] + body + "\n" + out[b:]
    return out


def write_docs(operations: Path) -> bool:
    """Rewrite OPERATIONS.md's generated blocks; True when anything changed."""
    old = operations.read_text()
    new = render(old)
    if new != old:
        operations.write_text(new)
    return new != old
