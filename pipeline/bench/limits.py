"""The two limits the pipeline is measured against, on the same chunks and sampling settings:
bare decoding (the worker's decoder, no Kafka) and bare model inference on pre-decoded tensors (no
Triton, no Kafka)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from pathlib import Path

import torch

from pipeline.bench.workload import Workload
from pipeline.contract import ChunkMeta
from pipeline.inference.analysis import Analyzer
from pipeline.inference.client import pack
from pipeline.media.decode import decode
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings
from pipeline.worker.process import decoded_items


def ffmpeg_limit(work: Workload, settings: Settings, parallel: int | None = None) -> float:
    """Video seconds decoded per wall second by the worker's own decoder (one ffmpeg per chunk, its
    output read and unpacked here), `parallel` chunks at a time (all cores)."""
    ff = ffmpeg_exe(settings.ffmpeg_binary)

    def one(path: Path) -> None:
        decode(ff, path, settings.sample_fps, settings.frame_width, fast=settings.fast_decode)

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(parallel or os.cpu_count()) as pool:
        list(pool.map(one, [c.path for c in work.chunks]))
    return work.seconds / (time.perf_counter() - start)


def model_limit(work: Workload, settings: Settings, tracking: bool = True,
                batches: list[dict] | None = None) -> float:
    """Video seconds per wall second through the analysis the `emotion` model runs (detector,
    expression, VAD, prosody, fusion: pipeline/inference/analysis.py) in this process, one call per
    chunk as the worker batches them; decoding happens before the clock starts (`batches`: the
    workload already decoded by `decoded_batches`)."""
    analyzer = Analyzer.load(settings.model_repository, tracking=tracking)
    batches = batches if batches is not None else decoded_batches(work, settings)
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    for t in batches:
        analyzer.run(t["FRAMES"], t["FRAME_MASK"], t["AUDIO"], t["AUDIO_LEN"], t["TRACK"])
    return work.seconds / (time.perf_counter() - start)


def decoded_batches(work: Workload, settings: Settings, roles: frozenset[str] | None = None) -> list[dict]:
    """The model's input tensors for each chunk of the workload, as the worker would send them."""
    ff = ffmpeg_exe(settings.ffmpeg_binary)
    batches = []
    for c in work.chunks:
        decoded = decode(ff, c.path, settings.sample_fps, settings.frame_width, fast=settings.fast_decode)
        meta = ChunkMeta("bench", c.seq, c.start_ms, duration_ms=c.end_ms - c.start_ms)
        batches.append(pack(decoded_items(meta, decoded, settings.segment_ms, "dual", roles or settings.roles)[1]))
    return batches
