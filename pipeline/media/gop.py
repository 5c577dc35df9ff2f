"""Which video packets no sampled frame needs, so ffmpeg can drop them before it decodes them.

At 2 sampled frames/s a 30-fps chunk decodes 150 frames to keep 10, and H.264 decoding is most of a
720p chunk's CPU. A frame cannot be skipped when a later frame refers to it, but every group of
pictures ends at the next random-access point (an IDR), after which nothing refers back. So in each
group, the frames after the last one the sampling uses (in decode order) are never looked at: with
key frames every second that is a fifth of a 30-fps chunk.

Which frame a sample gets is ffmpeg's `fps` filter's rule, reproduced exactly: each frame's time is
rounded to the output grid (1/fps, halves away from zero), and slot k shows the last frame whose
rounded time is at most k. So a frame is shown (needed) when the next frame in time rounds to a later
slot than it does. The output is byte-identical to decoding every frame
(tests/unit/test_gop.py, on real ffmpeg). Pure functions; the decoder passes the result to ffmpeg's
`noise` bitstream filter as an expression on the packet's timestamp.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

from pipeline.media.mkv import Packet

MAX_RANGES = 256   # the filter evaluates its expression per packet: bounded work and argv length


def _slot(pts: int, per_tick: Fraction) -> int:
    """The fps filter's output slot for a frame at `pts`: round(pts * per_tick), halves away from 0."""
    x = pts * per_tick
    q, r = divmod(x.numerator, x.denominator)  # floor
    frac = Fraction(r, x.denominator)
    if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and x > 0):
        return q + 1
    return q


def unneeded(packets: list[Packet], fps: float, tick_ns: int | Fraction) -> list[int]:
    """Indices (file order) of the packets no sampled frame needs. The last group is decoded whole:
    where the chunk's video ends decides how many samples the filter emits at the end."""
    if not packets or fps <= 0 or tick_ns <= 0:
        return []
    per_tick = Fraction(str(fps)).limit_denominator(1 << 20) * Fraction(tick_ns, 10 ** 9)
    by_time = sorted(range(len(packets)), key=lambda i: packets[i].pts)
    shown = [False] * len(packets)
    for a, b in pairwise(by_time):
        shown[a] = _slot(packets[a].pts, per_tick) < _slot(packets[b].pts, per_tick)
    shown[by_time[-1]] = True
    keys = [i for i, p in enumerate(packets) if p.key]
    drop: list[int] = []
    # Groups [start, nxt); the packets before the first key and the last group are kept.
    for start, nxt in pairwise(keys):
        last = max((i for i in range(start, nxt) if shown[i]), default=start)
        if any(packets[i].pts >= packets[nxt].pts for i in range(start, nxt)):
            continue  # a frame shown after the next key: this is not a closed group, keep it whole
        drop.extend(range(last + 1, nxt))
    return drop


def drop_ranges(packets: list[Packet], drop: list[int]) -> list[tuple[int, int]]:
    """Runs of timestamps (inclusive) that hold only dropped packets: a timestamp that a kept packet
    shares is never in one."""
    gone = set(drop)
    dropped = {packets[i].pts for i in gone}
    kept = {p.pts for i, p in enumerate(packets) if i not in gone}
    times = sorted({p.pts for p in packets})
    runs: list[tuple[int, int]] = []
    open_at: int | None = None
    prev = 0
    for t in times:
        if t in dropped and t not in kept:
            if open_at is None:
                open_at = t
            prev = t
        elif open_at is not None:
            runs.append((open_at, prev))
            open_at = None
    if open_at is not None:
        runs.append((open_at, prev))
    return runs[:MAX_RANGES]


def drop_filter(packets: list[Packet], fps: float, tick_ns: int | Fraction) -> str | None:
    """The `-bsf:v` argument that drops what no sample needs; None when nothing can be dropped.
    Key packets are never dropped, whatever the timestamps say."""
    runs = drop_ranges(packets, unneeded(packets, fps, tick_ns))
    if not runs:
        return None
    terms = "+".join(f"between(pts,{lo},{hi})" for lo, hi in runs)
    return f"noise=drop='not(key)*({terms})'"
