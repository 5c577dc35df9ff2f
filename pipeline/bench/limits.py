"""The two limits the pipeline is measured against, on the same chunks and sampling settings:
bare ffmpeg decoding (`-f null`) and bare model inference on pre-decoded tensors (no Triton, no Kafka)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import time

import numpy as np
import torch

from pipeline.bench.workload import Workload
from pipeline.contract import ChunkMeta
from pipeline.inference.acoustics import prosody
from pipeline.inference.face_detection import MTCNN
from pipeline.inference.fusion import aggregate_face, fuse
from pipeline.media.decode import decode, target_size
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings
from pipeline.worker.process import build_items


def ffmpeg_limit(work: Workload, settings: Settings, parallel: int | None = None) -> float:
    """Video seconds decoded per wall second, one ffmpeg per chunk, `parallel` at a time (all cores)."""
    ff = ffmpeg_exe(settings.ffmpeg_binary)
    w, h = target_size(work.shape.width, work.shape.height, settings.frame_width)

    def one(path) -> None:
        fast = ["-skip_loop_filter", "all"] if settings.fast_decode else []
        subprocess.run([ff, "-hide_banner", "-nostdin", "-loglevel", "error", *fast, "-i", str(path),
                        "-map", "0:v:0", "-vf", f"fps={settings.sample_fps},scale={w}:{h}", "-pix_fmt", "rgb24",
                        "-f", "null", "-", "-map", "0:a:0", "-ar", "16000", "-f", "null", "-"], check=True)

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(parallel or os.cpu_count()) as pool:
        list(pool.map(one, [c.path for c in work.chunks]))
    return work.seconds / (time.perf_counter() - start)


def model_limit(work: Workload, settings: Settings) -> float:
    """Video seconds per wall second through detector, expression, VAD and prosody, in-process, batched
    per chunk as the worker batches them; decoding happens before the clock starts."""
    repo = settings.model_repository
    d = repo / "face_detector" / "1"
    detector = MTCNN(*(torch.jit.load(str(d / f"{n}.pt")).eval() for n in ("pnet", "rnet", "onet")))
    expression = torch.jit.load(str(repo / "face_expression" / "1" / "mini_xception.pt")).eval()
    vad = torch.jit.load(str(repo / "voice" / "1" / "silero_vad.jit")).eval()
    ff = ffmpeg_exe(settings.ffmpeg_binary)
    batches = []
    for c in work.chunks:
        decoded = decode(ff, c.path, settings.sample_fps, settings.frame_width)
        meta = ChunkMeta("bench", c.seq, c.start_ms, duration_ms=c.end_ms - c.start_ms)
        batches.append(build_items(meta, decoded, "dual", settings.segment_ms)[1])
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    with torch.inference_mode():
        for items in batches:
            frames = [f for it in items for f in it.frames]
            found = detector.detect(np.stack(frames)) if frames else None
            probs = expression(torch.from_numpy(found.crops)).numpy() if found is not None else None
            n = max(len(it.audio) for it in items)
            audio = torch.from_numpy(np.stack([np.pad(it.audio, (0, n - len(it.audio))) for it in items]))
            vad.reset_states()
            speech = torch.stack([vad(audio[:, i:i + 512], 16000).reshape(-1) for i in range(0, n - 511, 512)], 1)
            k = 0
            for j, it in enumerate(items):
                f = len(it.frames)
                face, _ = aggregate_face(probs[k:k + f], found.scores[k:k + f]) if f else (None, 0.0)
                k += f
                voiced = bool((speech[j] > 0.5).float().mean() >= 0.2)
                fuse(face, voiced, prosody(it.audio).arousal if voiced else None)
    return work.seconds / (time.perf_counter() - start)
