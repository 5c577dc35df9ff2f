"""Does a whole-call recording look like the layout it will be published with?

The v1 `dual` layout means two camera views side by side (agent left, customer right) and stereo audio
(agent left channel, customer right). A single webcam recorded with the default layout is cut down the
middle: a centred face ends up half in each view and neither half finds it, with no error anywhere.
The producer cannot run a face detector (that lives in the serving image), but a side-by-side composite
has what one camera's picture does not: a vertical edge at the centre (or a symmetric pair of edges
around a gap) running down most rows of every frame, because the two halves come from different rooms.

This is a heuristic that can only warn, never decide: the layout is part of the chunk contract and the
recorder is its authority, so a guess must not change what is analysed. On scikit-image's eight
bundled photographs (tests/unit/test_layout.py): single pictures score 0.01-0.31 (the highest, a rocket
with a tall vertical edge near the centre), two different ones side by side 0.49-0.77, and with a black
gap between them 0.44-0.97 (lower when a view's own border is black too, hiding one of the gap's edges).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.media.probe import MediaInfo

SAMPLE_W, SAMPLE_H = 640, 360   # seams survive the resize: they stay at the centre, blurred by a pixel
SAMPLE_FRAMES = 5
SAMPLE_EVERY_S = 2.0
EDGE_MIN = 8          # summed RGB difference across a boundary that counts as an edge
SEAM_MIN = 0.35       # seam strength above which the picture reads as two views side by side


def seam_strength(frames: np.ndarray) -> float:
    """(N, H, W, 3) uint8 frames -> how much more often than its neighbours the centre of the picture
    (or a symmetric pair of boundaries around it) is an edge, as a fraction of rows: 0 for one picture,
    near 1 for two different pictures side by side."""
    if frames.ndim != 4 or frames.shape[2] < 16 or frames.shape[0] == 0:
        return 0.0
    f = frames.astype(np.int16)
    w = f.shape[2]
    half = max(4, w // 40)                       # how far from the centre a gap's edges may be
    c = w // 2
    window = f[:, :, c - half - 1:c + half + 1]
    d = np.abs(np.diff(window, axis=2)).sum(axis=3)          # boundary i: columns c-half-1+i | c-half+i
    # An edge in a row: strong in itself and against that row's own texture around the centre.
    edge = (d >= EDGE_MIN) & (d >= 3 * np.median(d, axis=2, keepdims=True))
    frac = edge.mean(axis=(0, 1))
    frac = np.maximum.reduce([frac, np.roll(frac, 1), np.roll(frac, -1)])   # a pixel of resize blur
    centre = half                                                           # boundary c-1 | c
    pairs = [(frac[centre - k] + frac[centre + k]) / 2 for k in range(1, half)]
    return float(max([frac[centre], *pairs]) - np.median(frac))


@dataclass(frozen=True)
class LayoutCheck:
    seam: float | None          # None: no video to judge
    warnings: tuple[str, ...]


def check_dual(info: MediaInfo, frames: np.ndarray | None) -> LayoutCheck:
    """What will go wrong if this recording is analysed as `dual`, in words a user can act on."""
    warnings = []
    seam = None
    if info.video is not None and frames is not None and len(frames):
        seam = seam_strength(frames)
        if seam < SEAM_MIN:
            warnings.append(
                f"the picture looks like one camera's view (no edge down the middle, score {seam:.2f} < "
                f"{SEAM_MIN}): the dual layout analyses its left half as the agent and its right half as the "
                "customer, so a face in the middle is cut in two and found in neither. If one person fills "
                "the picture, publish with --layout customer (or agent)")
    if info.audio is not None and info.audio.channels == 1:
        warnings.append("the audio is mono: the dual layout tells voices apart by channel (agent left, customer "
                        "right), so this recording's voice will not be analysed; with one speaker, use "
                        "--layout customer (or agent)")
    return LayoutCheck(seam, tuple(warnings))


def sample_frames(ffmpeg: str, recording: Path, timeout: float = 30.0) -> np.ndarray:
    """A few frames from the recording's first seconds, resized to one size (N, H, W, 3)."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", "1", "-i", str(recording),
            "-map", "0:v:0", "-vf", f"fps={1 / SAMPLE_EVERY_S},scale={SAMPLE_W}:{SAMPLE_H},format=rgb24",
            "-frames:v", str(SAMPLE_FRAMES), "-f", "rawvideo", "pipe:"]
    try:
        out = subprocess.run(argv, capture_output=True, timeout=timeout).stdout
    except subprocess.TimeoutExpired:
        return np.zeros((0, SAMPLE_H, SAMPLE_W, 3), np.uint8)
    n = len(out) // (SAMPLE_W * SAMPLE_H * 3)
    return np.frombuffer(out[:n * SAMPLE_W * SAMPLE_H * 3], np.uint8).reshape(n, SAMPLE_H, SAMPLE_W, 3)
