"""What an MP4/MOV chunk's sample tables say about its video, read without decoding anything.

Recorders that publish their own MP4 files (Chime's per-attendee chunks, a phone's upload) reach the
decoder as they are, not re-cut into Matroska, so the frames no sample needs (`pipeline.media.gop`)
are planned from the `moov` box here: decoding times from `stts`, random-access points from `stss`,
each checked against the sample's own bytes (an H.264 IDR, a VP9 key frame), as the Matroska reader
does. With frames in decode order (no composition offsets) ffmpeg's mov demuxer stamps each packet
with its dts in the track's timescale, which is what the drop filter compares against.

A fragmented file (a live recorder's, a browser's MediaRecorder: an empty `moov` with `mvex`, then
`moof` + `mdat` pairs) keeps the same facts in each fragment's `traf`: the decode time of its first
sample in `tfdt`, then per `trun` each sample's duration, size and flags, each falling back to the
fragment's `tfhd` defaults, then to the track's `trex`. ffmpeg stamps a fragment's first packet with
its `tfdt`, so a fragment is planned only where it has one.

Every byte is untrusted: sizes are checked against what is left, the sample count is bounded, and
anything unusual leaves `video` None so every frame is decoded as before: an edit list on the video
track other than one plain entry from time zero, frames out of order (composition offsets), two video
tracks, a codec we cannot check, tables that disagree on the sample count, samples both in the `moov`
and in fragments, a fragment without `tfdt` or whose data offset the file does not state.
"""

from __future__ import annotations

import dataclasses
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
MAX_FRAGMENT_BOXES = 64     # a fragment holds a track fragment or two, each a header, a time and a run
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
# Reordered frames (B-frames: composition offsets) are not planned. Without an edit list ffmpeg's
# mov demuxer still moves every presentation time back by a delay of its own reckoning, so the times
# the drop filter would compare are not the sample tables' dts + offset; the frames came out different
# on real files (tests/unit/test_mp4_plan.py). Real-time recorders do not reorder frames.
# tfhd flags
BASE_DATA_OFFSET, DESCRIPTION_INDEX, DEFAULT_DURATION, DEFAULT_SIZE, DEFAULT_FLAGS = 0x1, 0x2, 0x8, 0x10, 0x20
DEFAULT_BASE_IS_MOOF = 0x20000
# trun flags
DATA_OFFSET, FIRST_SAMPLE_FLAGS = 0x1, 0x4
SAMPLE_DURATION, SAMPLE_SIZE, SAMPLE_FLAGS, SAMPLE_OFFSET = 0x100, 0x200, 0x400, 0x800
# sample flags: not a sync sample, or depends on others (what ffmpeg reads as not a key frame)
NON_SYNC = 0x10000
DEPENDS_YES = 0x1000000
CHECKED = {b"avc1": "avc", b"avc3": "avc", b"vp09": "vp9"}


@dataclass(frozen=True)
class Index:
    tick_ns: Fraction               # nanoseconds per tick of the video track's timescale
    video: list[Packet] | None      # the one video track's samples in decode order; None = not plannable


@dataclass
class _Trak:
    track_id: int = 0
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
        elif kind == b"tkhd":
            t.track_id = _u(buf, bs + (20 if _u(buf, bs, 1, be) == 1 else 12), 4, be)
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


class _KeyCheck:
    """Whether a sample flagged random-access really starts a closed group (an H.264 IDR, a VP9 key
    frame), from a bounded prefix of its bytes and a bounded total over the file."""

    def __init__(self, buf: memoryview, t: _Trak) -> None:
        self.buf = buf
        self.kind = CHECKED.get(t.codec)
        self.nal_len = _avc_nal_length(t.config) if self.kind == "avc" else None
        self.checked = 0

    @property
    def usable(self) -> bool:
        """A codec whose key frames we can recognise, with the configuration to read its samples."""
        return self.kind is not None and (self.kind != "avc" or self.nal_len is not None)

    def __call__(self, start: int, size: int) -> bool:
        stop = start + size
        if start < 0 or stop > len(self.buf):
            raise Unreadable("a sample past the end of the file")
        # A prefix, copied (no view of the map outlives it): an IDR comes after a few small NAL
        # units; one that does not fit reads as not random-access, which only drops less.
        # An IDR slice is larger than the prefix at 720p and up: its header byte, inside it, is enough.
        payload = memoryview(bytes(self.buf[start:min(stop, start + CHECK_PREFIX)]))
        self.checked += len(payload)
        if self.checked > MAX_CHECKED:
            raise Unreadable("more sync-sample bytes than the bound")
        if self.nal_len is not None:
            return _avc_idr(payload, self.nal_len, whole=stop <= start + CHECK_PREFIX)
        return _vp9_key(payload)


def _plain_timeline(t: _Trak) -> bool:
    """ffmpeg shifts or cuts a track with any other edit list: not the timeline planned here."""
    return t.timescale > 0 and (t.edits is None or t.edits == [(0, 1 << 16)])


def _packets(buf: memoryview, t: _Trak) -> list[Packet] | None:
    check = _KeyCheck(buf, t)
    if not check.usable or not _plain_timeline(t) or t.deltas is None or t.sizes is None:
        return None
    if t.chunks is None or t.chunk_offsets is None:
        return None
    n = len(t.sizes)
    if n == 0:
        return None
    deltas = _expand(t.deltas, n)
    if t.offsets is not None and any(_expand(t.offsets, n)):
        return None          # reordered frames: not planned (see the note at the top)
    sync = set(t.sync) if t.sync is not None else set(range(1, n + 1))
    offsets = _sample_offsets(t, n)
    packets = []
    dts = 0
    for i in range(n):
        key = i + 1 in sync and check(offsets[i], t.sizes[i])
        packets.append(Packet(dts, key))
        dts += deltas[i]
    return packets


@dataclass(frozen=True)
class _Defaults:
    """A track's sample defaults (`trex`), overridden per fragment by `tfhd`."""
    duration: int = 0
    size: int = 0
    flags: int = 0


def _trex(buf: memoryview, s: int, e: int) -> tuple[int, _Defaults]:
    return _u(buf, s + 4, 4, e), _Defaults(_u(buf, s + 12, 4, e), _u(buf, s + 16, 4, e), _u(buf, s + 20, 4, e))


def _tfhd(buf: memoryview, hs: int, he: int, moof: int, first: bool,
          trex: _Defaults) -> tuple[int, int | None, _Defaults]:
    """A track fragment header: its track, where its data is counted from, and its sample defaults
    (the track's, overridden where the header states them). The base is None where the file does not
    state it (no base offset, not counted from the moof, and not the moof's first track fragment)."""
    flags = _u(buf, hs, 4, he) & 0xFFFFFF
    track = _u(buf, hs + 4, 4, he)
    pos = hs + 8
    if flags & BASE_DATA_OFFSET:
        base: int | None = _u(buf, pos, 8, he)
        pos += 8
    else:
        base = moof if flags & DEFAULT_BASE_IS_MOOF or first else None
    if flags & DESCRIPTION_INDEX:
        pos += 4
    d = trex
    if flags & DEFAULT_DURATION:
        d, pos = dataclasses.replace(d, duration=_u(buf, pos, 4, he)), pos + 4
    if flags & DEFAULT_SIZE:
        d, pos = dataclasses.replace(d, size=_u(buf, pos, 4, he)), pos + 4
    if flags & DEFAULT_FLAGS:
        d = dataclasses.replace(d, flags=_u(buf, pos, 4, he))
    return track, base, d


def _fragment(buf: memoryview, moof: int, s: int, e: int, video: _Trak, trex: _Defaults,
              check: _KeyCheck, budget: int) -> list[Packet] | None:
    """The video samples of one `moof` (payload [s, e), the box itself at `moof`); [] when it holds
    none of the video track; None when a fragment is not one this reader plans."""
    packets: list[Packet] = []
    first_traf = True
    seen = 0
    for kind, ts, te in _boxes(buf, s, e):
        if kind != b"traf":
            continue
        tfhd = tfdt = None
        runs = []
        for sub, bs, be in _boxes(buf, ts, te):
            seen += 1
            if seen > MAX_FRAGMENT_BOXES:
                raise Unreadable("more boxes in a fragment than the bound")
            if sub == b"tfhd":
                tfhd = (bs, be)
            elif sub == b"tfdt":
                version = _u(buf, bs, 1, be)
                tfdt = _u(buf, bs + 4, 8 if version == 1 else 4, be)
            elif sub == b"trun":
                runs.append((bs, be))
        if tfhd is None:
            raise Unreadable("a track fragment without its header")
        track, base, d = _tfhd(buf, *tfhd, moof, first_traf, trex)
        first_traf = False
        if track != video.track_id:
            continue
        if base is None:
            return None      # data right after the previous fragment's: not stated, not planned
        if tfdt is None:
            return None      # ffmpeg would go on from where it thinks the track ended: not planned
        dts, data = tfdt, base
        for rs, re_ in runs:
            version = _u(buf, rs, 1, re_)
            rflags = _u(buf, rs, 4, re_) & 0xFFFFFF
            count = _u(buf, rs + 4, 4, re_)
            pos = rs + 8
            if rflags & DATA_OFFSET:
                raw = _u(buf, pos, 4, re_)
                data = base + (raw - (1 << 32) if raw >> 31 else raw)
                pos += 4
            first_flags = None
            if rflags & FIRST_SAMPLE_FLAGS:
                first_flags, pos = _u(buf, pos, 4, re_), pos + 4
            fields = sum(bool(rflags & f) for f in (SAMPLE_DURATION, SAMPLE_SIZE, SAMPLE_FLAGS, SAMPLE_OFFSET))
            if len(packets) + count > budget or pos + 4 * fields * count > re_:
                raise Unreadable("a run larger than its box or the bound")
            for i in range(count):
                duration = size = sample_flags = comp = None
                if rflags & SAMPLE_DURATION:
                    duration, pos = _u(buf, pos, 4, re_), pos + 4
                if rflags & SAMPLE_SIZE:
                    size, pos = _u(buf, pos, 4, re_), pos + 4
                if rflags & SAMPLE_FLAGS:
                    sample_flags, pos = _u(buf, pos, 4, re_), pos + 4
                if rflags & SAMPLE_OFFSET:
                    comp = int.from_bytes(buf[pos:pos + 4], "big", signed=version == 1)
                    pos += 4
                duration = d.duration if duration is None else duration
                size = d.size if size is None else size
                if sample_flags is None:
                    sample_flags = first_flags if i == 0 and first_flags is not None else d.flags
                if comp:
                    return None      # reordered frames: not planned (see the note at the top)
                sync = not sample_flags & (NON_SYNC | DEPENDS_YES)
                packets.append(Packet(dts, sync and check(data, size)))
                dts += duration
                data += size
    return packets


def _fragmented(buf: memoryview, moofs: list[tuple[int, int, int]], video: _Trak,
                trex: _Defaults) -> list[Packet] | None:
    """The video samples of every fragment, in file order."""
    check = _KeyCheck(buf, video)
    if not check.usable or not _plain_timeline(video) or video.sizes:
        return None          # (sizes: samples in the moov too, two timelines to merge)
    packets: list[Packet] = []
    for moof, s, e in moofs:
        found = _fragment(buf, moof, s, e, video, trex, check, MAX_BLOCKS - len(packets))
        if found is None:
            return None
        packets += found
    return packets or None


def _read(buf: memoryview) -> Index | None:
    moov = None
    moofs = []
    start = 0
    for n, (kind, s, e) in enumerate(_boxes(buf, 0, len(buf))):
        if n > MAX_BLOCKS:
            raise Unreadable("more boxes than the bound")   # each costs a step here: empty boxes are free to send
        if kind == b"moof":
            moofs.append((start, s, e))   # top-level boxes are contiguous: this one starts where the last ended
        start = e
        if kind == b"moov":
            if moov is not None:
                return None
            moov = (s, e)
    if moov is None:
        return None
    traks, trex = [], {}
    fragmented = False
    for kind, s, e in _boxes(buf, *moov):
        if kind == b"mvex":
            fragmented = True
            for sub, bs, be in _boxes(buf, s, e):
                if sub == b"trex":
                    track_id, defaults = _trex(buf, bs, be)
                    trex[track_id] = defaults
        if kind == b"trak":
            t = _Trak()
            _read_trak(buf, s, e, t)
            traks.append(t)
    videos = [t for t in traks if t.handler == b"vide"]
    if len(videos) != 1 or fragmented != bool(moofs):
        return None
    video = videos[0]
    if fragmented:
        if video.track_id not in trex or moofs[0][0] < moov[1]:
            return None      # no track defaults, or a fragment before the moov: not planned
        packets = _fragmented(buf, moofs, video, trex[video.track_id])
    else:
        packets = _packets(buf, video)
    if packets is None:
        return None
    return Index(Fraction(10 ** 9, video.timescale), packets)


def read_index(path: Path) -> Index | None:
    """The video plan of an MP4/MOV file, or None when it cannot be read as a plain one."""
    return read_mapped(path, _read)
