"""`callstream bench`: one command that runs every figure of docs/BENCHMARKS.md and prints the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callstream_lab.bench.agreement import compare, lfw_views, photo_views, with_detector
from callstream_lab.bench.limits import decoded_batches, ffmpeg_limit, model_limit
from callstream_lab.bench.runner import Bench, RunResult, triton_peak_rss_mb
from callstream_lab.bench.workload import Workload
from pipeline.model.analysis import Analyzer
from pipeline.settings import REPO_ROOT, Settings

PEER_ENV = "bench-peer"
PEER_PACKAGES = ["tensorflow-cpu", "opencv-contrib-python-headless<5", "pandas", "moviepy<2", "matplotlib",
                 "tqdm", "requests", "Pillow", "ffmpeg-python", "psycopg[binary]"]


def peer_python(settings: Settings, log: Callable[..., None]) -> Path:
    """fer needs TensorFlow and OpenCV: a benchmark-only venv keeps them out of the serving environment."""
    venv = settings.state_dir / PEER_ENV
    py = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        log("  creating the peer environment (TensorFlow CPU, OpenCV, fer) ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "fer==25.10.3"], check=True)
        (venv / ".ready").touch()
    return py


def run_peer(py: Path, mode: str, recording: Path, arg: str, workdir: Path) -> dict:
    """Run a peer in `workdir`: fer.Video writes its data.csv into the current folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([str(py), str(REPO_ROOT / "pipeline" / "bench" / "peer.py"), mode, str(recording), arg],
                         capture_output=True, text=True, check=True, cwd=workdir)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(name: str, r: RunResult, cores: int, spread: list[float] | None = None) -> dict:
    return {"run": name, "workers": r.workers, "chunks": r.chunks, "video_s": r.video_seconds,
            "wall_s": round(r.wall_seconds, 2), "video_s_per_s": round(r.throughput, 2),
            **({"spread": [round(x, 2) for x in spread]} if spread else {}),
            "per_core": round(r.throughput / cores, 2), "chunks_per_s": round(r.chunks / r.wall_seconds, 2),
            "p50_ms": round(r.pct(50)), "p95_ms": round(r.pct(95)), "p99_ms": round(r.pct(99)),
            "breakdown_ms": {k: round(v, 1) for k, v in r.breakdown_ms.items()},
            "triton_batch": {k: round(v, 2) for k, v in r.batch_sizes.items()},
            "worker_peak_rss_mb": [round(x) for x in r.worker_peak_rss_mb],
            **({"alerts": len(r.alert_latencies_ms),
                "alert_p50_ms": round(float(np.percentile(r.alert_latencies_ms, 50))),
                "alert_p95_ms": round(float(np.percentile(r.alert_latencies_ms, 95)))}
               if r.alert_latencies_ms else {})}


def combined_limit(decode: float, model: float) -> float:
    """Video-s/s when one machine both decodes and infers: the core-seconds per video second add up."""
    return 1.0 / (1.0 / decode + 1.0 / model)


def median_run(runs: list[RunResult]) -> RunResult:
    return sorted(runs, key=lambda r: r.throughput)[len(runs) // 2]


def agreement(work: Workload, settings: Settings) -> dict:
    """The served model against the same model with MTCNN's full search on every frame: on the
    workload's calls (both participants' views, more segments) and on photograph views."""
    repo = settings.model_repository
    reference = with_detector(Analyzer.load(repo), repo, "mtcnn")
    fast = Analyzer.load(repo)
    both = frozenset({"customer", "agent"})
    calls = compare(decoded_batches(work, settings, both), reference, fast)
    return {"calls": calls, "photo": compare([[photo_views(views=12)]], reference, fast),
            "lfw": compare([[lfw_views()]], reference, fast),
            "lfw_no_face": compare([[lfw_views(False)]], reference, fast)}


@dataclass
class Plan:
    """What one workload gets besides capacity: the in-process limits and the agreement check (they
    measure this checkout's decoder and models, so not with workers from another), the paced latency
    run and the peers. A comparison row (the still photograph) gets capacity only."""
    work: Workload
    limits: bool = True
    latency: bool = True
    live_calls: int | None = None   # the latency run's calls; None: half the one-worker capacity


def bench(settings: Settings, plans: list[Plan], workers: list[int], min_wall_s: float, repeats: int,
          latency_seconds: float, peers: bool, code: Path | None = None, log: Callable[..., None] = print) -> dict:
    cores = os.cpu_count() or 1
    workdir = settings.state_dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    b = Bench(settings, log, code)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "cores": cores, "code": str(code) if code else None,
                    "settings": {"sample_fps": settings.sample_fps, "frame_width": settings.frame_width,
                                 "segment_ms": settings.segment_ms, "chunk_seconds": settings.chunk_seconds,
                                 "worker_concurrency": settings.worker_concurrency,
                                 "partitions": settings.partitions},
                    "min_wall_s": min_wall_s, "repeats": repeats, "workloads": []}
    py = peer_python(settings, log) if peers else None
    for plan in plans:
        work = plan.work
        log(f"== {work.label}: {len(work.templates)} call(s) of {work.mean_call_seconds:.0f} s on average, "
            f"{work.chunk_seconds:g}-second chunks")
        entry: dict = {"workload": work.label, "runs": []}
        if plan.limits:
            entry["ffmpeg_limit"] = round(ffmpeg_limit(work, settings), 2)
            log(f"  bare ffmpeg decode: {entry['ffmpeg_limit']} video-s/s")
            decoded = decoded_batches(work, settings)   # once for both limits
            entry["model_limit"] = round(model_limit(work, settings, batches=decoded), 2)
            log(f"  bare model inference: {entry['model_limit']} video-s/s")
            entry["model_limit_mtcnn"] = round(model_limit(work, settings, "mtcnn", batches=decoded), 2)
            log(f"  bare model inference with MTCNN's full search on every frame: {entry['model_limit_mtcnn']}")
            entry["agreement"] = agreement(work, settings)
            log(f"  served detector vs MTCNN, per segment: {entry['agreement']}")
            entry["combined_limit"] = round(combined_limit(entry["ffmpeg_limit"], entry["model_limit"]), 2)
        results = {}
        for n in workers:
            log(f"  capacity, {n} worker(s): runs of at least {min_wall_s:.0f} s")
            runs = b.capacity(work, n, min_wall_s, repeats)
            r = median_run(runs)
            results[n] = r
            entry["runs"].append(_row(f"capacity, {n} worker(s), median of {len(runs)}", r, cores,
                                      [x.throughput for x in runs]))
            entry.setdefault("live_calls_per_core", round(r.throughput / cores, 1))
            entry.setdefault("capacity_cpu_s", {**r.cpu_s, "wall_s": round(r.wall_seconds, 1)})
            log(f"  CPU seconds during the median run: {r.cpu_s} in {r.wall_seconds:.1f} s of wall time")
        base = results[workers[0]]
        if len(workers) > 1:
            entry["scale_out"] = round(results[workers[-1]].throughput / base.throughput, 2)
            entry["scale_out_workers"] = [workers[0], workers[-1]]
        if plan.limits:
            best = max(r.throughput for r in results.values())
            entry["fraction_of_combined_limit"] = round(best / entry["combined_limit"], 2)
        if plan.latency:
            live = plan.live_calls or max(1, round(base.throughput / 2))
            r = b.latency(work, live, latency_seconds, workers[0],
                          dashboard=workdir / f"dashboard-{work.name}.png")
            load = "as asked" if plan.live_calls else "~half load"
            entry["runs"].append(_row(f"latency at {load} ({live} live calls)", r, cores))
            entry["latency_offered_video_s_per_s"] = live
            log(f"  latency at {live} live calls: p50 {r.pct(50):.0f} ms, p95 {r.pct(95):.0f} ms")
            if r.alert_latencies_ms:
                entry["alert_latency_ms"] = {"alerts": len(r.alert_latencies_ms),
                                             "p50": round(float(np.percentile(r.alert_latencies_ms, 50))),
                                             "p95": round(float(np.percentile(r.alert_latencies_ms, 95))),
                                             "target_ms": round(work.chunk_seconds * 1000 + 2000)}
                log(f"  live alerts: {entry['alert_latency_ms']} (recorded -> published)")
            source = work.templates[0].source
            if py is not None and source is not None:
                peers_dir = settings.state_dir / "bench"
                entry["peers"] = [run_peer(py, "fer", source, str(settings.sample_fps), peers_dir),
                                  run_peer(py, "naive", source, settings.db_url, peers_dir)]
                for p in entry["peers"]:
                    p["video_s_per_s"] = round(p["video_seconds"] / p["wall_seconds"], 2)
                    log(f"  peer {p['mode']}: {p['video_s_per_s']} video-s/s")
        report["workloads"].append(entry)
    report["triton_peak_rss_mb"] = round(triton_peak_rss_mb(settings))
    out = workdir / "results.json"
    out.write_text(json.dumps(report, indent=2))
    log(f"results: {out}")
    return report


def markdown(report: dict) -> str:
    lines = [f"Run on {report['date']}, {report['cores']} cores, settings {report['settings']}; capacity runs of "
             f"at least {report['min_wall_s']:.0f} s, {report['repeats']} per row (median shown, then all)"
             + (f"; workers from {report['code']}" if report.get("code") else "") + ".", ""]
    for e in report["workloads"]:
        lines += [f"### {e['workload']}", "",
                  "| run | workers | chunks | wall s | video-s/s | runs | per core | p50 ms | p95 ms | p99 ms | "
                  "decode ms | inference ms | db ms | broker+queue ms | Triton batch | worker peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in e["runs"]:
            bd, tb = r["breakdown_ms"], r["triton_batch"]
            runs = ", ".join(f"{x:.1f}" for x in r.get("spread", [])) or "-"
            lines.append(f"| {r['run']} | {r['workers']} | {r['chunks']} | {r['wall_s']:.0f} | {r['video_s_per_s']} | "
                         f"{runs} | {r['per_core']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
                         f"{bd['decode_ms']} | {bd['inference_ms']} | {bd['db_ms']} | {bd['broker_and_queue_ms']} | "
                         f"{tb.get('emotion', 0):.1f} | {', '.join(map(str, r['worker_peak_rss_mb']))} |")
        lines.append("")
        if "ffmpeg_limit" in e:
            lines.append(f"- limits: bare ffmpeg decode {e['ffmpeg_limit']} video-s/s, bare model inference "
                         f"{e['model_limit']} ({e['model_limit_mtcnn']} with MTCNN searching every frame); both on "
                         f"the same cores, 1 / (1/decode + 1/model) = {e['combined_limit']} "
                         f"video-s/s: the pipeline is at **{e['fraction_of_combined_limit']}** of that")
        lines.append(f"- live calls per core (one worker at capacity, median run): {e['live_calls_per_core']}")
        if "capacity_cpu_s" in e:
            c = e["capacity_cpu_s"]
            lines.append(f"- CPU seconds in that run ({c['wall_s']} s of wall time, {report['cores']} cores): workers "
                         f"with their ffmpeg {c.get('worker_and_ffmpeg')}, Triton {c.get('triton')}, the whole "
                         f"machine busy {c.get('machine')}, taken by the hypervisor (steal) {c.get('stolen', '-')}")
        if "agreement" in e:
            c, ph = e["agreement"]["calls"], e["agreement"]["photo"]
            lines.append(f"- served detector vs MTCNN on the same tensors: faces found in {c['fast_faced']} / "
                         f"{c['faced']} of {c['segments']} segments, same label on {c['label_agreement']:.1%} of "
                         f"MTCNN's, face_found agrees on {c['face_found_agreement']:.1%}; on the photograph views "
                         f"{ph['fast_faced']} / {ph['faced']}, {ph['label_agreement']:.1%} / "
                         f"{ph['face_found_agreement']:.1%}")
            if "lfw" in e["agreement"]:
                lf, no = e["agreement"]["lfw"], e["agreement"]["lfw_no_face"]
                lines.append(f"- on LFW's 100 faces: found by the served detector in {lf['fast_faced']}, by MTCNN in "
                             f"{lf['faced']}, same label on {lf['label_agreement']:.1%} of MTCNN's; on its 100 "
                             f"patches without a face: {no['fast_faced']} and {no['faced']} claimed")
        if "alert_latency_ms" in e:
            a = e["alert_latency_ms"]
            lines.append(f"- live alerts at {e['latency_offered_video_s_per_s']} live calls: {a['alerts']} fired, "
                         f"from the window's last segment recorded to published p50 {a['p50']} ms, "
                         f"p95 {a['p95']} ms (target: chunk length + 2 s = {a['target_ms']} ms)")
        if "scale_out" in e:
            a, z = e["scale_out_workers"]
            lines.append(f"- scale-out, {z} workers / {a}: {e['scale_out']}x")
        for p in e.get("peers", []):
            lines.append(f"- peer {p['mode']}: {p['video_s_per_s']} video-s/s ({p['frames']} frames, "
                         f"{p['results']} results)")
        lines.append("")
    lines.append(f"Triton peak RSS (server + backend stubs): {report['triton_peak_rss_mb']} MB")
    return "\n".join(lines)
