"""Pure segment arithmetic: which analysis segments a chunk covers, and what each track sees in them.

Segments sit on a grid fixed in *call* time (multiples of segment_ms from the call's start), so the
same instant always maps to the same row whichever chunk carries it, and redelivery or out-of-order
arrival cannot produce overlapping rows. A chunk boundary that falls inside a grid cell (stream-copy
cuts land on keyframes) splits that cell into two rows that abut exactly. A piece shorter than
`min_ms` at a chunk edge (encoder priming makes 20-ms slivers common) joins its neighbour within the
chunk instead of becoming a row too short to hold a sampled frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGENT, CUSTOMER = "agent", "customer"   # the tracks of v1 layouts (store.models.Track)


@dataclass(frozen=True)
class Segment:
    start_ms: int   # call time
    end_ms: int


def segments(chunk_start_ms: int, duration_ms: int, segment_ms: int, min_ms: int | None = None) -> list[Segment]:
    if segment_ms <= 0:
        raise ValueError("segment_ms must be positive")
    min_ms = segment_ms // 4 if min_ms is None else min_ms
    end = chunk_start_ms + max(duration_ms, 0)
    out = []
    start = chunk_start_ms
    while start < end:
        cell_end = (start // segment_ms + 1) * segment_ms
        stop = min(cell_end, end)
        out.append(Segment(start, stop))
        start = stop
    if len(out) > 1 and out[-1].end_ms - out[-1].start_ms < min_ms:
        out[-2:] = [Segment(out[-2].start_ms, out[-1].end_ms)]
    if len(out) > 1 and out[0].end_ms - out[0].start_ms < min_ms:
        out[:2] = [Segment(out[0].start_ms, out[1].end_ms)]
    return out


def frame_indices(seg: Segment, chunk_start_ms: int, fps: float, n_frames: int) -> np.ndarray:
    """Frames sampled at i/fps seconds after the chunk start that fall inside the segment."""
    times = np.arange(n_frames) * (1000.0 / fps) + chunk_start_ms
    return np.nonzero((times >= seg.start_ms) & (times < seg.end_ms))[0]


def sample_range(seg: Segment, chunk_start_ms: int, rate: int, n_samples: int) -> slice:
    a = int(round((seg.start_ms - chunk_start_ms) * rate / 1000))
    b = int(round((seg.end_ms - chunk_start_ms) * rate / 1000))
    return slice(max(0, min(a, n_samples)), max(0, min(b, n_samples)))


@dataclass(frozen=True)
class TrackView:
    track: str
    x0: int | None   # horizontal slice of the frame this track sees; None = no video for this track
    x1: int | None
    channel: int | None  # audio channel of this track; None = no attributable audio


def layout_tracks(layout: str) -> tuple[str, ...]:
    """The participants a chunk of this layout carries, in track_views' order."""
    if layout == "dual":
        return (AGENT, CUSTOMER)
    if layout in (AGENT, CUSTOMER):
        return (layout,)
    raise ValueError(f"unknown layout {layout!r}")


def track_views(layout: str, frame_width: int | None, channels: int) -> list[TrackView]:
    """Who is where. 'dual': video side by side (agent left, customer right), stereo audio (agent
    left channel, customer right); mono audio in a dual recording cannot be attributed and is left out.
    'agent'/'customer': the whole picture and the first channel are that one participant."""
    if layout == "dual":
        half = frame_width // 2 if frame_width else None
        stereo = channels >= 2
        return [TrackView(AGENT, 0 if half else None, half, 0 if stereo else None),
                TrackView(CUSTOMER, half, frame_width if half else None, 1 if stereo else None)]
    (track,) = layout_tracks(layout)
    return [TrackView(track, 0 if frame_width else None, frame_width, 0 if channels else None)]


def effective_duration(header_ms: int | None, container_ms: int | None, decoded_ms: float,
                       tolerance_ms: float) -> tuple[int, str | None]:
    """The chunk length the rows cover, and a note when a declared length was overruled.

    A declared length (the duration-ms header, else the container's) within `tolerance_ms` of what
    decodes is kept: it is the recorder's exact cut, and frame sampling makes the decoded length coarse.
    Beyond it the media wins, so a header cannot make rows for minutes that were never sent."""
    decoded = int(round(decoded_ms))
    if header_ms is not None:
        if abs(header_ms - decoded) <= tolerance_ms:
            return header_ms, None
        return decoded, f"duration-ms={header_ms} clamped to the {decoded} ms that decode"
    if container_ms and abs(container_ms - decoded) <= tolerance_ms:
        return container_ms, None
    return decoded, None


class SegmentPlanner:
    """Hands out a chunk's segments as its media is decoded, identical to segments() of the whole.

    The length is known only at the end of a stream, and it decides the last cells (a short last piece
    joins its neighbour) and, with a declared length, may end up to `tolerance_ms` short of what
    decoded. So a cell is released only once media reaches a lookahead of one segment plus that
    tolerance past it, and never the last cell of the partial plan; the rest comes from finish()."""

    def __init__(self, chunk_start_ms: int, segment_ms: int, tolerance_ms: float) -> None:
        self.start, self.segment_ms = chunk_start_ms, segment_ms
        self.lookahead = segment_ms + tolerance_ms
        self.released: list[Segment] = []

    def ready(self, decoded_ms: float) -> list[Segment]:
        """Cells that are certain now that `decoded_ms` of the chunk has been decoded."""
        reach = int(decoded_ms - self.lookahead)
        if reach <= 0:
            return []
        certain = segments(self.start, reach, self.segment_ms)[:-1]
        new = certain[len(self.released):]
        self.released.extend(new)
        return new

    def finish(self, duration_ms: int) -> list[Segment]:
        final = segments(self.start, duration_ms, self.segment_ms)
        if final[: len(self.released)] != self.released:
            raise RuntimeError(f"segment plan diverged: released {self.released[-1:]} "
                               f"but the final plan has {final[len(self.released) - 1:len(self.released)]}")
        rest = final[len(self.released):]
        self.released.extend(rest)
        return rest
