"""What an MP4/MOV chunk's sample tables say about its video, read without decoding anything.

Recorders that publish their own MP4 files (Chime's per-attendee chunks, a phone's upload) reach the
decoder as they are, not re-cut into Matroska, so the frames no sample needs (`pipeline.media.gop`)
are planned from the `moov` box here: decoding times from `stts`, composition offsets from `ctts`,
random-access points from `stss`, each checked against the sample's own bytes (an H.264 IDR, a VP9
key frame), as the Matroska reader does. ffmpeg's mov demuxer stamps a packet with dts + ctts in the
track's timescale, which is what the drop filter compares against.

Every byte is untrusted: sizes are checked against what is left, the sample count is bounded, and
anything unusual leaves `video` None so every frame is decoded as before: fragments (`moof`, `mvex`),
an edit list on the video track other than one plain entry from time zero, negative composition
offsets, two video tracks, a codec we cannot check, tables that disagree on the sample count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from pipeline.media.mapped import Unreadable, read_mapped
from pipeline.media.mkv import MAX_BLOCKS, Packet, _avc_idr, _avc_nal_length, _vp9_key

MAX_DEPTH = 8
CHECK_PREFIX = 64 << 10     # bytes of a sync sample read for its first NAL units / frame header
MAX_CHECKED = 32 << 20      # all sync samples together: tables pointing every sample at one huge
                            # region would otherwise make a chunk cost terabytes of copying
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
CHECKED = {b"avc1": "avc", b"avc3": "avc", b"vp09": "vp9"}


@dataclass(frozen=True)
class Index:
    tick_ns: Fraction               # nanoseconds per tick of the video track's timescale
    video: list[Packet] | None      # the one video track's samples in decode order; None = not plannable


@dataclass
class _Trak:
    handler: bytes = b""
    timescale: int = 0
    edits: list[tuple[int, int]] | None = None     # (media_time, rate as 16.16) per entry
    codec: bytes = b""
    config: bytes = b""                            # avcC payload
    deltas: list[tuple[int, int]] | None = None    # stts (count, delta)
    offsets: list[tuple[int, int]] | None = None   # ctts (count, offset)
    sync: list[int] | None = None                  # stss, 1-based sample numbers
    sizes: list[int] | None = None                 # stsz
    chunks: list[tuple[int, int]] | None = None    # stsc (first chunk, samples per chunk)
    chunk_offsets: list[int] | None = None         # stco / co64


def _boxes(buf: memoryview, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in [pos, end)."""
    while pos + 8 <= end:
        size = int.from_bytes(buf[pos:pos + 4], "big")
        kind = bytes(buf[pos + 4:pos + 8])
        head = 8
        if size == 1:
            if pos + 16 > end:
                raise Unreadable("truncated")
            size, head = int.from_bytes(buf[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise Unreadable(f"box {kind!r} overruns its parent")
        yield kind, pos + head, pos + size
        pos += size
    if pos != end:
        raise Unreadable("trailing bytes")


def _u(buf: memoryview, pos: int, n: int, end: int) -> int:
    if pos + n > end:
        raise Unreadable("truncated")
    return int.from_bytes(buf[pos:pos + n], "big")


def _table(buf: memoryview, s: int, e: int, width: int, fields: int, signed: bool = False) -> list[tuple[int, ...]]:
    """A full box's entry table: version/flags, a count, then `fields` integers of `width` bytes each."""
    count = _u(buf, s + 4, 4, e)
    if count > MAX_BLOCKS or s + 8 + count * width * fields > e:
        raise Unreadable("a table larger than its box or the bound")
    out = []
    pos = s + 8
    for _ in range(count):
        row = []
        for _ in range(fields):
            row.append(int.from_bytes(buf[pos:pos + width], "big", signed=signed))
            pos += width
        out.append(tuple(row))
    return out


def _read_trak(buf: memoryview, s: int, e: int, t: _Trak, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise Unreadable("boxes nested too deep")
    for kind, bs, be in _boxes(buf, s, e):
        if kind in CONTAINERS:
            _read_trak(buf, bs, be, t, depth + 1)
        elif kind == b"hdlr" and not t.handler:   # MOV's second one (in minf) names the data handler
            t.handler = bytes(buf[bs + 8:bs + 12])
        elif kind == b"mdhd":
            version = _u(buf, bs, 1, be)
            t.timescale = _u(buf, bs + (20 if version == 1 else 12), 4, be)
        elif kind == b"elst":
            version = _u(buf, bs, 1, be)
            w = 8 if version == 1 else 4
            count = _u(buf, bs + 4, 4, be)
            if count > 16 or bs + 8 + count * (2 * w + 4) > be:
                raise Unreadable("an edit list larger than its box")
            t.edits = []
            pos = bs + 8
            for _ in range(count):
                media_time = int.from_bytes(buf[pos + w:pos + 2 * w], "big", signed=True)
                rate = _u(buf, pos + 2 * w, 4, be)
                t.edits.append((media_time, rate))
                pos += 2 * w + 4
        elif kind == b"stsd":
            if _u(buf, bs + 4, 4, be) != 1:
                t.codec = b"?"          # several sample descriptions: not planned
                continue
            entry = next(_boxes(buf, bs + 8, be))
            t.codec = entry[0]
            if t.handler != b"vide":
                continue
            # A visual sample entry's own fields take 78 bytes, then its boxes (avcC among them).
            for sub, ss, se in _boxes(buf, entry[1] + 78, entry[2]):
                if sub == b"avcC":
                    t.config = bytes(buf[ss:se])
        elif kind == b"stts":
            t.deltas = [(c, d) for c, d in _table(buf, bs, be, 4, 2)]
        elif kind == b"ctts":
            version = _u(buf, bs, 1, be)
            rows = _table(buf, bs, be, 4, 2, signed=version == 1)
            t.offsets = [(c, o) for c, o in rows]
        elif kind == b"stss":
            t.sync = [n for (n,) in _table(buf, bs, be, 4, 1)]
        elif kind == b"stsz":
            uniform, count = _u(buf, bs + 4, 4, be), _u(buf, bs + 8, 4, be)
            if count > MAX_BLOCKS:
                raise Unreadable("more samples than the bound")
            if uniform:
                t.sizes = [uniform] * count
            else:
                if bs + 12 + 4 * count > be:
                    raise Unreadable("a size table larger than its box")
                t.sizes = [int.from_bytes(buf[bs + 12 + 4 * i:bs + 16 + 4 * i], "big") for i in range(count)]
        elif kind == b"stsc":
            t.chunks = [(first, per) for first, per, _ in _table(buf, bs, be, 4, 3)]
        elif kind in (b"stco", b"co64"):
            t.chunk_offsets = [o for (o,) in _table(buf, bs, be, 4 if kind == b"stco" else 8, 1)]


def _expand(runs: list[tuple[int, int]], n: int) -> list[int]:
    out: list[int] = []
    for count, value in runs:
        if len(out) + count > n:
            raise Unreadable("a run table longer than the samples")
        out.extend([value] * count)
    if len(out) != n:
        raise Unreadable("a run table shorter than the samples")
    return out


def _sample_offsets(t: _Trak, n: int) -> list[int]:
    """File offset of each sample, from stsc (samples per chunk) over stco (chunk offsets) and stsz."""
    assert t.chunks is not None and t.chunk_offsets is not None and t.sizes is not None
    offsets: list[int] = []
    runs = t.chunks + [(len(t.chunk_offsets) + 1, 0)]
    for (first, per), (nxt, _) in zip(runs, runs[1:], strict=False):
        if first < 1 or nxt <= first or per > MAX_BLOCKS:
            raise Unreadable("a sample-to-chunk table out of order")
        for chunk in range(first, nxt):
            if chunk > len(t.chunk_offsets):
                raise Unreadable("a chunk past the chunk offsets")
            pos = t.chunk_offsets[chunk - 1]
            for _ in range(per):
                if len(offsets) == n:
                    raise Unreadable("more samples in chunks than in sizes")
                offsets.append(pos)
                pos += t.sizes[len(offsets) - 1]
    if len(offsets) != n:
        raise Unreadable("fewer samples in chunks than in sizes")
    return offsets


def _packets(buf: memoryview, t: _Trak) -> list[Packet] | None:
    if t.codec not in CHECKED or t.timescale <= 0 or t.deltas is None or t.sizes is None:
        return None
    if t.chunks is None or t.chunk_offsets is None:
        return None
    if t.edits is not None and t.edits != [(0, 1 << 16)]:
        return None                      # ffmpeg shifts or cuts the track: not the timeline planned here
    n = len(t.sizes)
    if n == 0:
        return None
    deltas = _expand(t.deltas, n)
    comp = _expand(t.offsets, n) if t.offsets is not None else [0] * n
    if min(comp) < 0:
        return None
    sync = set(t.sync) if t.sync is not None else set(range(1, n + 1))
    nal_len = _avc_nal_length(t.config) if CHECKED[t.codec] == "avc" else None
    if CHECKED[t.codec] == "avc" and nal_len is None:
        return None
    offsets = _sample_offsets(t, n)
    packets = []
    dts = 0
    checked = 0
    for i in range(n):
        key = False
        if i + 1 in sync:
            start, stop = offsets[i], offsets[i] + t.sizes[i]
            if stop > len(buf):
                raise Unreadable("a sample past the end of the file")
            # A prefix, copied (no view of the map outlives it): an IDR comes after a few small NAL
            # units; one that does not fit reads as not random-access, which only drops less.
            payload = memoryview(bytes(buf[start:min(stop, start + CHECK_PREFIX)]))
            checked += len(payload)
            if checked > MAX_CHECKED:
                raise Unreadable("more sync-sample bytes than the bound")
            key = _avc_idr(payload, nal_len) if nal_len is not None else _vp9_key(payload)
        packets.append(Packet(dts + comp[i], key))
        dts += deltas[i]
    return packets


def _read(buf: memoryview) -> Index | None:
    moov = None
    for kind, s, e in _boxes(buf, 0, len(buf)):
        if kind in (b"moof", b"mfra"):
            return None                  # fragmented: samples live in fragments, not planned here
        if kind == b"moov":
            moov = (s, e)
    if moov is None:
        return None
    traks = []
    for kind, s, e in _boxes(buf, *moov):
        if kind == b"mvex":
            return None
        if kind == b"trak":
            t = _Trak()
            _read_trak(buf, s, e, t)
            traks.append(t)
    videos = [t for t in traks if t.handler == b"vide"]
    if len(videos) != 1:
        return None
    video = videos[0]
    packets = _packets(buf, video)
    if packets is None:
        return None
    return Index(Fraction(10 ** 9, video.timescale), packets)


def read_index(path: Path) -> Index | None:
    """The video plan of an MP4/MOV file, or None when it cannot be read as a plain one."""
    return read_mapped(path, _read)
