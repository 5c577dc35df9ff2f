"""Decode a chunk into sampled RGB frames and 16 kHz float PCM with one ffmpeg process.

The decoder does the sampling and scaling (fps and scale filters), so only the frames the model needs
ever cross the pipe. The command is built with ffmpeg-python and run as an argument list: nothing from
the message reaches a shell.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.errors import BadChunk
from pipeline.media.probe import MediaInfo, probe

AUDIO_RATE = 16_000


@dataclass
class Decoded:
    info: MediaInfo
    frames: np.ndarray       # (N, H, W, 3) uint8, sampled at `fps`; N may be 0
    fps: float
    audio: np.ndarray        # (C, S) float32 at 16 kHz; C may be 0
    duration_ms: int


def target_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Scale to target_width (never upscale), both sides even as yuv-derived filters prefer."""
    w = min(target_width, width)
    w -= w % 2
    h = int(round(height * w / width / 2)) * 2
    return max(w, 2), max(h, 2)


def is_truncated(declared_ms: int | None, decoded_ms: float) -> bool:
    """A file cut short still opens when its index comes first, and decodes (exit 0) up to the cut;
    what gives it away is decoding much less than the container declares."""
    if not declared_ms:
        return False
    return decoded_ms < declared_ms - max(500.0, 0.1 * declared_ms)


def decode(ffmpeg_bin: str, path: Path, fps: float, frame_width: int, timeout: float = 120.0,
           fast: bool = True) -> Decoded:
    info = probe(ffmpeg_bin, path)
    # Deblocking smooths block edges that the downscale to frame_width removes anyway.
    src = ffmpeg.input(str(path), **({"skip_loop_filter": "all"} if fast else {}))
    outputs = []
    size = None
    if info.video is not None:
        size = target_size(info.video.width, info.video.height, frame_width)
        outputs.append(src.video.filter("fps", fps=fps).filter("scale", size[0], size[1])
                       .output("pipe:", format="rawvideo", pix_fmt="rgb24"))
    channels = min(info.audio.channels, 2) if info.audio else 0
    tmpdir = tempfile.mkdtemp(prefix="callstream-pcm-", dir=scratch_dir())
    pcm = Path(tmpdir) / "audio.f32"
    if info.audio is not None:
        outputs.append(src.audio.output(str(pcm), format="f32le", acodec="pcm_f32le",
                                        ac=channels, ar=AUDIO_RATE))
    stream = ffmpeg.merge_outputs(*outputs) if len(outputs) > 1 else outputs[0]
    argv = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(cmd=ffmpeg_bin)
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            raise BadChunk("undecodable", (msg[-1] if msg else f"ffmpeg exited {proc.returncode}")[:300])
        # A cut-off file with its index first still "decodes" (exit 0) up to the cut: that is data loss.
        errors = proc.stderr.decode(errors="replace")
        if "partial file" in errors:
            raise BadChunk("truncated", errors.strip().splitlines()[-1][:300])
        frames = np.zeros((0, 1, 1, 3), np.uint8)
        if size is not None:
            raw = np.frombuffer(proc.stdout, np.uint8)
            per = size[0] * size[1] * 3
            frames = raw[: len(raw) // per * per].reshape(-1, size[1], size[0], 3)
        audio = np.zeros((0, 0), np.float32)
        if info.audio is not None:
            audio = np.fromfile(pcm, np.float32)
            audio = audio[: len(audio) // channels * channels].reshape(-1, channels).T.copy()
    except subprocess.TimeoutExpired:
        raise BadChunk("decode_timeout", f"ffmpeg took longer than {timeout:.0f}s") from None
    finally:
        pcm.unlink(missing_ok=True)
        os.rmdir(tmpdir)
    if len(frames) == 0 and audio.size == 0:
        raise BadChunk("undecodable", "no frames and no audio decoded")
    decoded_ms = max(len(frames) * 1000.0 / fps, audio.shape[1] * 1000.0 / AUDIO_RATE if audio.size else 0)
    if is_truncated(info.duration_ms, decoded_ms):
        raise BadChunk("truncated", f"decoded {decoded_ms:.0f} ms of the {info.duration_ms} ms the container declares")
    duration = info.duration_ms if info.duration_ms else int(round(decoded_ms))
    return Decoded(info, frames, fps, audio, duration)


def scratch_dir() -> str | None:
    """Prefer RAM-backed /dev/shm for short-lived media files."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
