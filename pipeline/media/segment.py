"""Pure segment arithmetic: which grid cells a chunk touches, and whose media each chunk carries.

Segments sit on an exact grid in *call* time, `[k*S, (k+1)*S)`, so the same instant always maps to the
same row whichever chunk carries it. A chunk cut off the grid (stream-copy cuts land on keyframes, a
recorder starts a track at its own offset) contributes *pieces* of its edge cells; the store merges
every piece of a cell, from every chunk and from audio and video streams alike, into one row
(store/writer.py). So no row ever starts or ends off the grid because of a chunk boundary, and
out-of-order or duplicated chunks give the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.contract import ChunkMeta

AGENT, CUSTOMER = "agent", "customer"   # the participants of v1 layouts: id and role are the same word


@dataclass(frozen=True)
class Segment:
    """A piece of one grid cell that a chunk covers: [start_ms, end_ms) in call time."""
    start_ms: int
    end_ms: int

    def cell(self, segment_ms: int) -> int:
        return self.start_ms // segment_ms * segment_ms


def segments(chunk_start_ms: int, duration_ms: int, segment_ms: int) -> list[Segment]:
    """The chunk's span cut at every grid line: whole cells inside, pieces of cells at its edges."""
    if segment_ms <= 0:
        raise ValueError("segment_ms must be positive")
    end = chunk_start_ms + max(duration_ms, 0)
    out = []
    start = chunk_start_ms
    while start < end:
        stop = min((start // segment_ms + 1) * segment_ms, end)
        out.append(Segment(start, stop))
        start = stop
    return out


def context_span(seg: Segment, chunk_start_ms: int, chunk_end_ms: int, window_ms: int) -> Segment:
    """The audio a voice-emotion net hears for a segment: `window_ms` centred on it, shifted inward at
    the chunk's edges so it never needs another chunk, shorter only when the chunk is. It depends on
    the chunk alone, so a redelivered chunk gives the same windows whatever else is in flight."""
    centre = (seg.start_ms + seg.end_ms) / 2
    start = max(chunk_start_ms, min(int(round(centre - window_ms / 2)), chunk_end_ms - window_ms))
    return Segment(start, min(chunk_end_ms, start + window_ms))


@dataclass(frozen=True)
class View:
    """Where one participant is in a chunk's media."""
    participant_id: str
    role: str
    x0: int | None   # horizontal slice of the frame; None = no video of this participant
    x1: int | None
    channel: int | None  # audio channel; None = no attributable audio


def participants(meta: ChunkMeta, default_layout: str) -> list[tuple[str, str]]:
    """(participant id, role) of everyone a chunk carries, in views() order; known before decoding, so
    the privacy policy can refuse a chunk without fetching it."""
    if meta.participant_id:
        return [(meta.participant_id, meta.role or "other")]
    if meta.audio_channels:
        return [c for c in meta.audio_channels if c]
    layout = meta.layout or default_layout
    if layout == "dual":
        return [(AGENT, AGENT), (CUSTOMER, CUSTOMER)]
    if layout in (AGENT, CUSTOMER):
        return [(layout, layout)]
    raise ValueError(f"unknown layout {layout!r}")


def wants(meta: ChunkMeta) -> tuple[bool, bool]:
    """(video, audio): which streams of the chunk are anyone's; the rest is never decoded."""
    if meta.audio_channels:
        return False, True
    return meta.media != "audio", meta.media != "video"


def views(meta: ChunkMeta, default_layout: str, frame_width: int | None, channels: int) -> list[View]:
    """Who is where. 'dual' (v1): video side by side (agent left, customer right), stereo audio (agent
    left channel, customer right); mono audio in a dual recording cannot be attributed and is left out.
    One participant: the whole picture and their channel (`audio-channel`, default the first).
    `audio-channels`: one participant per named channel, audio only."""
    if meta.audio_channels:
        return [View(c[0], c[1], None, None, i) for i, c in enumerate(meta.audio_channels)
                if c and i < channels]
    if not meta.participant_id and (meta.layout or default_layout) == "dual":
        half = frame_width // 2 if frame_width else None
        stereo = channels >= 2
        return [View(AGENT, AGENT, 0 if half else None, half, 0 if stereo else None),
                View(CUSTOMER, CUSTOMER, half, frame_width if half else None, 1 if stereo else None)]
    ((pid, role),) = participants(meta, default_layout)
    channel = meta.audio_channel or 0
    return [View(pid, role, 0 if frame_width else None, frame_width, channel if channel < channels else None)]


END_SLACK_MS = 50   # codec padding: an AAC frame's priming at 44.1/48 kHz, an Opus frame with its pre-skip


def effective_duration(header_ms: int | None, container_ms: int | None, decoded_ms: float,
                       tolerance_ms: float, chunk_start_ms: int = 0, segment_ms: int = 0) -> tuple[int, str | None]:
    """The chunk length the rows cover, and a note when a declared length was overruled.

    A declared length (the duration-ms header, else the container's) within `tolerance_ms` of what
    decodes is kept: it is the recorder's exact cut, and frame sampling makes the decoded length coarse.
    Beyond it the media wins, so a header cannot make rows for minutes that were never sent.

    With the grid (`segment_ms`), the end never opens a cell of its own from a rounding: a declared end
    past a grid line that the decoded media does not reach, or a last piece past a grid line shorter
    than END_SLACK_MS (encoder padding both the container and the decoder report), ends at that line.
    An Opus track cut at 13.7-20.0 s declares 6.31 s and decodes 6.30 s: its rows end at 20 s, not at
    a 21st cell [20000, 20010). A chunk that continues the stream covers that cell whole anyway."""
    decoded = int(round(decoded_ms))
    note = None
    if header_ms is not None:
        if abs(header_ms - decoded) <= tolerance_ms:
            duration = header_ms
        else:
            moved = "clamped" if header_ms > decoded else "raised"
            duration, note = decoded, f"duration-ms={header_ms} {moved} to the {decoded} ms that decode"
    elif container_ms and abs(container_ms - decoded) <= tolerance_ms:
        duration = container_ms
    else:
        duration = decoded
    if segment_ms > 0 and duration > 0:
        end = chunk_start_ms + duration
        line = (end - 1) // segment_ms * segment_ms      # the last grid line the span crosses into
        if line > chunk_start_ms and (chunk_start_ms + decoded <= line or end - line < END_SLACK_MS):
            duration = line - chunk_start_ms
    return duration, note


class SegmentPlanner:
    """Hands out a chunk's segments as its media is decoded, identical to segments() of the whole.

    The length is known only at the end of a stream: with a declared length it may end up to
    `tolerance_ms` short of what decoded. So a cell is released only once media reaches that tolerance
    past its end, and never the last piece of the partial plan; the rest comes from finish()."""

    def __init__(self, chunk_start_ms: int, segment_ms: int, tolerance_ms: float, context_ms: int = 0) -> None:
        """`context_ms`: audio a segment needs past its end (a voice-emotion net's window) before it is
        released mid-chunk; its window is then the one the whole chunk would give it."""
        self.start, self.segment_ms = chunk_start_ms, segment_ms
        self.lookahead = tolerance_ms + context_ms
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
