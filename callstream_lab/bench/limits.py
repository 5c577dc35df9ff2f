"""The two limits the pipeline is measured against, on the same chunks and sampling settings:
bare decoding (the worker's decoder, no Kafka) and bare model inference on pre-decoded tensors (no
Triton, no Kafka)."""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import time

import torch

from callstream_lab.bench.agreement import with_detector
from callstream_lab.bench.workload import Workload
from pipeline.ingest.producer import Upload
from pipeline.media.decode import decode
from pipeline.media.ffargs import DecodeOptions
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.media.segment import wants
from pipeline.model.analysis import Analyzer
from pipeline.settings import Settings
from pipeline.worker.process import decoded_items
from pipeline.worker.triton_client import pack

WARMUP_PASSES = 3  # over a call's first two chunks, per model instance, before the model limit's clock
MIN_VIDEO_S = 120.0  # each limit is timed on at least this much video (the workload repeated): a 30-s
                     # workload decodes in half a second, where one slow chunk moves the figure by a fifth


def _repeats(work: Workload) -> int:
    return max(1, math.ceil(MIN_VIDEO_S / sum(t.seconds for t in work.templates)))


def _seconds(work: Workload) -> float:
    return sum(t.seconds for t in work.templates)


def ffmpeg_limit(work: Workload, settings: Settings, parallel: int | None = None) -> float:
    """Video seconds decoded per wall second by the worker's own decoder (one ffmpeg per chunk, its
    output read and unpacked here), `parallel` chunks at a time (all cores)."""
    ff = ffmpeg_exe(settings.ffmpeg_binary)

    def one(up: Upload) -> None:
        video, audio = wants(up.meta("bench"))
        decode(ff, up.path, settings.sample_fps, settings.frame_width, options=DecodeOptions(fast=settings.fast_decode),
               want_video=video, want_audio=audio)

    reps = _repeats(work)
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(parallel or os.cpu_count()) as pool:
        list(pool.map(one, [u for t in work.templates for u in t.uploads] * reps))
    return _seconds(work) * reps / (time.perf_counter() - start)


def model_limit(work: Workload, settings: Settings, detector: str | None = None,
                batches: list[list[dict]] | None = None, instances: int | None = None) -> float:
    """Video seconds per wall second through the analysis the `emotion` model runs (detector,
    expression, VAD, prosody, fusion: pipeline/model/analysis.py), with all the cores for it: one
    instance per core (`instances`), each its own model on one torch thread as in Triton, one call per
    chunk as the worker batches them; `detector` swaps in the built-in detector of that kind (the served
    one by default). (Triton itself runs one instance on the 2-core reference
    machine, where it shares the cores with ffmpeg: see triton_models/emotion/config.pbtxt.) Decoding
    happens before the clock starts (`batches`: the workload already decoded by `decoded_batches`)."""
    n = instances or os.cpu_count() or 1
    analyzers = [Analyzer.load(settings.model_repository) for _ in range(n)]
    if detector is not None:
        analyzers = [with_detector(a, settings.model_repository, detector) for a in analyzers]
    batches = batches if batches is not None else decoded_batches(work, settings)
    reps = -(-_repeats(work) // n) * n   # whole passes over the call, the same number per instance

    def serve(i: int, calls: list[list[dict]], passes: int) -> None:
        for _ in range(passes):
            for call in calls:
                for t in call:
                    analyzers[i].run(t["FRAMES"], t["FRAME_MASK"], t["AUDIO"], t["AUDIO_LEN"])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch releases the GIL inside its ops: n threads keep n cores busy
    try:
        with cf.ThreadPoolExecutor(n) as pool:
            # TorchScript optimises a net on its first runs: warm every instance up off the clock, as a
            # serving Triton instance is, or whichever shape is measured first reads slow.
            list(pool.map(lambda i: serve(i, [call[:2] for call in batches], WARMUP_PASSES), range(n)))
            start = time.perf_counter()
            list(pool.map(lambda i: serve(i, batches, reps // n), range(n)))
            return _seconds(work) * reps / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def decoded_batches(work: Workload, settings: Settings, roles: frozenset[str] | None = None) -> list[list[dict]]:
    """The model's input tensors for each chunk of each call of the workload, as the worker would send
    them; chunks without an analysed participant are left out, as the worker sends nothing for them."""
    ff = ffmpeg_exe(settings.ffmpeg_binary)
    calls = []
    for tpl in work.templates:
        batches = []
        for up, _ in tpl.ordered():
            meta = up.meta("bench")
            video, audio = wants(meta)
            decoded = decode(ff, up.path, settings.sample_fps, settings.frame_width,
                             options=DecodeOptions(fast=settings.fast_decode),
                             want_video=video, want_audio=audio)
            items = decoded_items(meta, decoded, settings.segment_ms, settings.default_layout,
                                  roles or settings.roles)[1]
            if items:
                batches.append(pack(items))
        calls.append(batches)
    return calls
