"""What a Matroska/WebM chunk's blocks say, read without decoding anything.

Two decisions in the decoder need it. ffmpeg's stream-info pass may be skipped only when the chunk's
timestamps start at zero: without the pass ffmpeg does not learn the start time, so a chunk that keeps
its recorder's running timestamps (10 s into the call, say) would be padded from zero. And the frames
no sample needs can be skipped before they are decoded only when the video's random-access points
are known to look back at nothing (an H.264 IDR, a VP8 or VP9 key frame), see `pipeline.media.gop`.

Every byte is untrusted: each size is checked against what is left, the walk is bounded, and anything
unusual (a laced or encoded video track, two video tracks, a codec we cannot check, a track timestamp
scale) leaves `video` None, so every frame is decoded as before. A file that lies here changes only
its own frames: ffmpeg decodes what it finds either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.media.mapped import Unreadable, read_mapped

MAX_BLOCKS = 100_000        # 10 min of 60-fps video with its audio; past this the file is not planned
MAX_HEADER_BYTES = 1 << 20  # Info and Tracks are small; a larger one is not read
TIMECODE_SCALE_NS = 1_000_000

EBML = 0x1A45DFA3
SEGMENT = 0x18538067
INFO, TIMECODE_SCALE = 0x1549A966, 0x2AD7B1
TRACKS, TRACK_ENTRY = 0x1654AE6B, 0xAE
TRACK_NUMBER, TRACK_TYPE, CODEC_ID, CODEC_PRIVATE = 0xD7, 0x83, 0x86, 0x63A2
CONTENT_ENCODINGS, TRACK_TIMECODE_SCALE = 0x6D80, 0x23314F
CLUSTER, CLUSTER_TIMECODE = 0x1F43B675, 0xE7
SIMPLE_BLOCK, BLOCK_GROUP, BLOCK, REFERENCE_BLOCK = 0xA3, 0xA0, 0xA1, 0xFB
# Segment children: an unknown-size Cluster (a file written live) ends where one of these begins.
TOP_LEVEL = frozenset({0x114D9B74, INFO, TRACKS, CLUSTER, 0x1C53BB6B, 0x1941A469, 0x1043A770, 0x1254C367})
VIDEO_TRACK = 1
CHECKED_CODECS = ("V_MPEG4/ISO/AVC", "V_VP8", "V_VP9")


@dataclass(frozen=True)
class Packet:
    pts: int    # ticks of `Index.tick_ns`, as ffmpeg's demuxer stamps the packet
    key: bool   # starts a group of pictures that refers to nothing before it


@dataclass(frozen=True)
class Index:
    tick_ns: int
    start: int | None             # earliest first-block time over the tracks; None = no blocks
    video: list[Packet] | None    # the one video track's blocks in file order; None = not plannable


@dataclass
class _Track:
    number: int = 0
    type: int = 0
    codec: str = ""
    private: bytes = b""
    encoded: bool = False
    scaled: bool = False


def _vint(buf: memoryview, pos: int, end: int) -> tuple[int, int, bool]:
    """A size: (value, bytes used, unknown)."""
    if pos >= end:
        raise Unreadable("truncated")
    first = buf[pos]
    if first == 0:
        raise Unreadable("a size longer than 8 bytes")
    n = 9 - first.bit_length()
    if pos + n > end:
        raise Unreadable("truncated")
    value = first & (0xFF >> n)
    for b in buf[pos + 1:pos + n]:
        value = (value << 8) | b
    return value, n, value == (1 << (7 * n)) - 1


def _id(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise Unreadable("truncated")
    first = buf[pos]
    n = 9 - first.bit_length() if first else 9
    if n > 4 or pos + n > end:
        raise Unreadable("a bad element id")
    return int.from_bytes(buf[pos:pos + n], "big"), n


def _elements(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, bool]]:
    """(id, data start, data end, unknown size) of each child in [pos, end)."""
    while pos < end:
        eid, n = _id(buf, pos, end)
        size, m, unknown = _vint(buf, pos + n, end)
        start = pos + n + m
        stop = end if unknown else start + size
        if stop > end:
            stop = end  # a file cut short: its last element is read as far as it goes
        yield eid, start, stop, unknown
        pos = stop


def _uint(buf: memoryview, start: int, end: int) -> int:
    if end - start > 8:
        raise Unreadable("an integer over 8 bytes")
    return int.from_bytes(buf[start:end], "big")


def _track(buf: memoryview, start: int, end: int) -> _Track:
    t = _Track()
    for eid, s, e, _ in _elements(buf, start, end):
        if eid == TRACK_NUMBER:
            t.number = _uint(buf, s, e)
        elif eid == TRACK_TYPE:
            t.type = _uint(buf, s, e)
        elif eid == CODEC_ID:
            t.codec = bytes(buf[s:e]).rstrip(b"\0").decode("ascii", "replace")
        elif eid == CODEC_PRIVATE:
            t.private = bytes(buf[s:e])
        elif eid == CONTENT_ENCODINGS:
            t.encoded = True
        elif eid == TRACK_TIMECODE_SCALE:
            t.scaled = True
    return t


def _avc_nal_length(private: bytes) -> int | None:
    """NAL length-field size from an avcC record; None when it is not one."""
    if len(private) < 7 or private[0] != 1:
        return None
    return (private[4] & 3) + 1


def _avc_idr(payload: memoryview, nal_len: int, whole: bool = True) -> bool:
    """Whether the sample's NAL units include an IDR slice. `whole` False: `payload` is only the
    sample's first bytes, so a NAL unit may run past its end; its header byte still says its type."""
    pos = 0
    while pos + nal_len < len(payload):
        size = int.from_bytes(payload[pos:pos + nal_len], "big")
        pos += nal_len
        if size == 0 or (whole and pos + size > len(payload)):
            return False
        if payload[pos] & 0x1F == 5:
            return True
        pos += size
    return False


def _vp9_key(payload: memoryview) -> bool:
    if not payload:
        return False
    b = payload[0]
    if b >> 6 != 0b10:          # frame_marker
        return False
    profile = ((b >> 5) & 1) | (((b >> 4) & 1) << 1)
    bit = 3 if profile < 3 else 2  # profile 3 has a reserved bit
    if (b >> bit) & 1:          # show_existing_frame: shows a decoded frame again
        return False
    return (b >> (bit - 1)) & 1 == 0  # frame_type 0: KEY_FRAME


def _random_access(track: _Track, payload: memoryview, nal_len: int | None) -> bool:
    """Whether this frame looks back at nothing: the container's key flag is not proof of that (an
    H.264 I-frame with a recovery point is flagged key, yet the frames after it may refer to earlier
    ones)."""
    if track.codec == "V_MPEG4/ISO/AVC":
        return nal_len is not None and _avc_idr(payload, nal_len)
    if track.codec == "V_VP8":
        return bool(payload) and payload[0] & 1 == 0
    return _vp9_key(payload)


def read_index(path: Path) -> Index | None:
    """The index of a Matroska file, or None when it cannot be read as one."""
    return read_mapped(path, _read)


def _read(buf: memoryview) -> Index:
    end = len(buf)
    elements = _elements(buf, 0, end)
    eid, _, _, _ = next(elements)
    if eid != EBML:
        raise Unreadable("no EBML header")
    eid, seg_start, seg_end, _ = next(elements)
    if eid != SEGMENT:
        raise Unreadable("no Segment")
    tick_ns = TIMECODE_SCALE_NS
    tracks: dict[int, _Track] = {}
    video: _Track | None = None
    plannable = True
    nal_len: int | None = None
    first: dict[int, int] = {}
    packets: list[Packet] = []
    blocks = 0
    pos = seg_start
    while pos < seg_end:
        eid, n = _id(buf, pos, seg_end)
        size, m, unknown = _vint(buf, pos + n, seg_end)
        start = pos + n + m
        stop = min(seg_end, start + size) if not unknown else seg_end
        if eid in (INFO, TRACKS) and (unknown or size > MAX_HEADER_BYTES):
            raise Unreadable("a header element too large to read")  # its timestamp scale would be guessed
        if eid == INFO:
            for cid, s, e, _ in _elements(buf, start, stop):
                if cid == TIMECODE_SCALE:
                    tick_ns = _uint(buf, s, e)
                    if tick_ns <= 0:
                        raise Unreadable("a zero timestamp scale")
        elif eid == TRACKS:
            for cid, s, e, _ in _elements(buf, start, stop):
                if cid == TRACK_ENTRY:
                    t = _track(buf, s, e)
                    if t.number in tracks:
                        raise Unreadable("two tracks share a number")
                    tracks[t.number] = t
            videos = [t for t in tracks.values() if t.type == VIDEO_TRACK]
            video = videos[0] if len(videos) == 1 else None
            plannable = (video is not None and video.codec in CHECKED_CODECS and not video.encoded
                         and not video.scaled)
            if plannable and video is not None and video.codec == "V_MPEG4/ISO/AVC":
                nal_len = _avc_nal_length(video.private)
                plannable = nal_len is not None
        elif eid == CLUSTER:
            if not tracks:
                raise Unreadable("a Cluster before the Tracks")
            stop, blocks = _cluster(buf, start, stop, unknown, tracks, video if plannable else None,
                                    nal_len, first, packets, blocks)
        elif unknown:
            raise Unreadable("an element of unknown size")
        pos = stop
    return Index(tick_ns, min(first.values()) if first else None,
                 packets if plannable and video is not None and packets else None)


def _cluster(buf: memoryview, pos: int, end: int, unknown: bool, tracks: dict[int, _Track],
             video: _Track | None, nal_len: int | None, first: dict[int, int], packets: list[Packet],
             blocks: int) -> tuple[int, int]:
    """Read one Cluster's blocks; returns where the Cluster ends and the running block count."""
    timecode = 0
    while pos < end:
        eid, n = _id(buf, pos, end)
        if unknown and eid in TOP_LEVEL:
            return pos, blocks
        size, m, child_unknown = _vint(buf, pos + n, end)
        if child_unknown:
            raise Unreadable("a Cluster child of unknown size")
        start = pos + n + m
        stop = min(end, start + size)
        if eid == CLUSTER_TIMECODE:
            timecode = _uint(buf, start, stop)
        elif eid in (SIMPLE_BLOCK, BLOCK_GROUP):
            blocks += 1
            if blocks > MAX_BLOCKS:
                raise Unreadable("too many blocks")
            if eid == SIMPLE_BLOCK:
                _block(buf, start, stop, timecode, None, tracks, video, nal_len, first, packets)
            else:
                block, referenced = None, False
                for cid, s, e, _ in _elements(buf, start, stop):
                    if cid == BLOCK:
                        block = (s, e)
                    elif cid == REFERENCE_BLOCK:
                        referenced = True
                if block is not None:
                    _block(buf, *block, timecode, not referenced, tracks, video, nal_len, first, packets)
        pos = stop
    return end, blocks


def _block(buf: memoryview, start: int, end: int, timecode: int, group_key: bool | None,
           tracks: dict[int, _Track], video: _Track | None, nal_len: int | None,
           first: dict[int, int], packets: list[Packet]) -> None:
    number, n, _ = _vint(buf, start, end)
    if start + n + 3 > end:
        raise Unreadable("a block shorter than its header")
    if number not in tracks:
        raise Unreadable("a block of no track")
    rel = int.from_bytes(buf[start + n:start + n + 2], "big", signed=True)
    flags = buf[start + n + 2]
    pts = timecode + rel
    first.setdefault(number, pts)
    if video is None or number != video.number:
        return
    if flags & 0x06:
        raise Unreadable("a laced video block")
    if flags & 0x08:  # decoded, never shown: the fps filter's view of which frame is shown no longer holds
        raise Unreadable("an invisible video frame")
    flagged = bool(flags & 0x80) if group_key is None else group_key
    payload = buf[start + n + 3:end]
    packets.append(Packet(pts, flagged and _random_access(video, payload, nal_len)))
