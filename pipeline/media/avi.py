"""Read the AVI stream that one ffmpeg process writes to its stdout: sampled frames and PCM, interleaved.

Why AVI: one ffmpeg per chunk has to hand over two streams, and one pipe cannot deadlock the way two
pipes read one after the other can. ffmpeg's own muxer interleaves the two by time (and bounds how far
one may run ahead), and AVI is the simplest container that carries raw video and PCM: a header that
declares each stream's frame size and channel count, then `NNdc`/`NNwb` chunks with a little-endian
length. The bytes are ffmpeg's output from untrusted media, so every length is checked before it is
read: a chunk larger than the stream's declared frame (or the audio packet bound) is an error, never an
allocation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import BadChunk

MAX_HEADER_BYTES = 64 * 1024       # ffmpeg writes ~2 KB for two streams
MAX_AUDIO_PACKET = 1 << 20         # ffmpeg's PCM packets are a few KB
MAX_SKIPPED_CHUNK = 1 << 20        # JUNK, index and metadata chunks
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class Header:
    """What the muxer declared; stream numbers are the `NN` of the data chunks' names."""
    video: int | None = None                  # stream number
    width: int = 0
    height: int = 0
    audio: int | None = None
    channels: int = 0
    sample_rate: int = 0

    @property
    def row_bytes(self) -> int:
        """AVI's raw RGB rows are padded to 4 bytes, as in a Windows bitmap."""
        return (self.width * 3 + 3) // 4 * 4

    @property
    def frame_bytes(self) -> int:
        return self.row_bytes * self.height

    @property
    def packed_frame_bytes(self) -> int:
        """The same frame without the row padding, as a rawvideo pipe carries it."""
        return self.width * self.height * 3


Read = Callable[[int], bytes]  # up to n bytes; fewer only at the end of the stream


def _exact(read: Read, n: int, what: str) -> bytes:
    data = read(n)
    if len(data) != n:
        raise BadChunk("undecodable", f"the decoder's output ended inside {what}")
    return data


def read_header(read: Read) -> Header:
    """Consume the RIFF header up to the start of the `movi` list; the streams it declares."""
    riff = read(12)
    if len(riff) < 12:
        raise BadChunk("undecodable", "the decoder produced no output")
    if riff[:4] != b"RIFF" or riff[8:12] != b"AVI ":
        raise BadChunk("undecodable", "the decoder's output is not the expected stream")
    streams: list[tuple[bytes, bytes]] = []  # (strh fccType, strf payload), in stream order
    seen = 0
    while True:
        cc, size = struct.unpack("<4sI", _exact(read, 8, "the stream header"))
        if cc == b"LIST":
            kind = _exact(read, 4, "the stream header")
            if kind == b"movi":
                break
            if kind in (b"hdrl", b"strl"):
                continue  # descend: their children follow
            size -= 4
        seen += size + 8
        if seen > MAX_HEADER_BYTES:
            raise BadChunk("undecodable", "the decoder's stream header is too large")
        body = _exact(read, size + (size & 1), "the stream header")[:size]
        if cc == b"strh":
            streams.append((body[:4], b""))
        elif cc == b"strf" and streams:
            streams[-1] = (streams[-1][0], body)
    return parse_streams(streams)


def parse_streams(streams: list[tuple[bytes, bytes]]) -> Header:
    """The video (24-bit raw, top-down) and audio (32-bit float PCM) streams the header declares."""
    h = Header()
    for i, (kind, fmt) in enumerate(streams):
        if kind == b"vids" and h.video is None and len(fmt) >= 16:
            width, height, _, bits = struct.unpack("<iiHH", fmt[4:16])
            if bits != 24 or not 0 < width <= 16384 or not 0 < abs(height) <= 16384:
                raise BadChunk("undecodable", f"unexpected decoded frame format {width}x{height}x{bits}")
            h = Header(i, width, abs(height), h.audio, h.channels, h.sample_rate)
        elif kind == b"auds" and h.audio is None and len(fmt) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
            if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:  # how more than 2 channels are declared
                tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID starts with the format tag
            if tag != 3 or bits != 32 or channels < 1:
                raise BadChunk("undecodable", f"unexpected decoded audio format {tag}/{channels}/{bits}")
            h = Header(h.video, h.width, h.height, i, channels, rate)
    return h


def read_packet(read: Read, header: Header) -> tuple[str, bytes] | None:
    """The next ("video", frame) or ("audio", samples) chunk; None at the end of the stream. A video
    frame of b"" is a slot that repeats the previous picture."""
    while True:
        head = read(8)
        if not head:
            return None
        if len(head) < 8:
            raise BadChunk("undecodable", "the decoder's output ended inside a chunk header")
        cc, size = struct.unpack("<4sI", head)
        if cc in (b"LIST", b"RIFF"):
            _exact(read, 4, "a list header")  # `movi` of an OpenDML extension: its chunks follow
            continue
        stream = int(cc[:2]) if cc[:2].isdigit() else -1
        if stream == header.video and cc[2:] in (b"dc", b"db"):
            if size == 0:
                # AVI's "no change" frame: ffmpeg's muxer writes one for each slot its video skips.
                return "video", b""
            if size != header.frame_bytes:
                raise BadChunk("undecodable", f"a decoded frame of {size} bytes, not {header.frame_bytes}")
            return "video", _exact(read, size, "a frame")
        if stream == header.audio and cc[2:] == b"wb":
            if size > MAX_AUDIO_PACKET or size % (4 * header.channels):
                raise BadChunk("undecodable", f"a decoded audio packet of {size} bytes")
            data = _exact(read, size + (size & 1), "an audio packet")
            return "audio", data[:size]
        if size > MAX_SKIPPED_CHUNK:
            raise BadChunk("undecodable", f"an unexpected {size}-byte chunk in the decoder's output")
        _exact(read, size + (size & 1), "a chunk")
