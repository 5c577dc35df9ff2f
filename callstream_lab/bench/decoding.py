"""`callstream bench --decode FILE...`: what the drop plan saves on each chunk file, as the worker
decodes it (one ffmpeg, sampled frames at the worker's rate and width), and that it changes nothing.

Each file is decoded alternately with and without the plan, one process at a time, for at least
`min_s` seconds of wall time each way; the figure is video seconds decoded per wall second."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.media import gop, mkv, mp4
from pipeline.media.decode import decode
from pipeline.media.ffargs import DecodeOptions, sniff_container
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings


def _plan(path: Path, fps: float) -> str:
    with open(path, "rb") as f:
        demuxer = sniff_container(f.read(512))
    index = mkv.read_index(path) if demuxer == "matroska" else mp4.read_index(path) if demuxer == "mov" else None
    if index is None or index.video is None:
        return f"{demuxer or 'unknown'}: not planned"
    dropped = len(gop.unneeded(index.video, fps, index.tick_ns))
    return f"{demuxer}: {dropped} of {len(index.video)} video packets dropped"


def compare(settings: Settings, files: list[Path], min_s: float = 5.0) -> list[dict]:
    ff = ffmpeg_exe(settings.ffmpeg_binary)
    rows = []
    for path in files:
        options = {"plan": DecodeOptions(fast=settings.fast_decode),
                   "every frame": DecodeOptions(fast=settings.fast_decode, drop_unsampled=False)}
        first = {k: decode(ff, path, settings.sample_fps, settings.frame_width, options=o) for k, o in options.items()}
        same = (np.array_equal(first["plan"].frames, first["every frame"].frames)
                and np.array_equal(first["plan"].audio, first["every frame"].audio))
        seconds = first["plan"].duration_ms / 1000
        spent = {k: 0.0 for k in options}
        runs = {k: 0 for k in options}
        while min(spent.values()) < min_s:
            for k, o in options.items():       # alternating: a slow moment costs both the same
                t = time.perf_counter()
                decode(ff, path, settings.sample_fps, settings.frame_width, options=o)
                spent[k] += time.perf_counter() - t
                runs[k] += 1
        speed = {k: seconds * runs[k] / spent[k] for k in options}
        rows.append({"file": path.name, "plan": _plan(path, settings.sample_fps), "identical": same,
                     "video_s_per_s": {k: round(v, 1) for k, v in speed.items()},
                     "speedup": round(speed["plan"] / speed["every frame"], 2)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| file | plan | same frames and audio | video-s/s with the plan | every frame | speed-up |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        v = r["video_s_per_s"]
        lines.append(f"| {r['file']} | {r['plan']} | {'yes' if r['identical'] else '**no**'} | {v['plan']} | "
                     f"{v['every frame']} | {r['speedup']}x |")
    return "\n".join(lines)
