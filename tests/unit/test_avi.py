"""The reader of ffmpeg's AVI output: every length is checked before it is read."""

import io
import struct

import pytest

from pipeline.errors import BadChunk
from pipeline.media import avi


def chunk(cc: bytes, body: bytes) -> bytes:
    return cc + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def listed(kind: bytes, body: bytes) -> bytes:
    return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body


def stream(video: tuple[int, int] | None = (4, 2), channels: int | None = 2, bits: int = 24) -> bytes:
    strls = b""
    if video:
        w, h = video
        strls += listed(b"strl", chunk(b"strh", b"vids" + bytes(52))
                        + chunk(b"strf", struct.pack("<IiiHHI", 40, w, -h, 1, bits, 0) + bytes(20)))
    if channels:
        strls += listed(b"strl", chunk(b"strh", b"auds" + bytes(52))
                        + chunk(b"strf", struct.pack("<HHIIHHH", 3, channels, 16000, 0, 0, 32, 0)))
    hdrl = listed(b"hdrl", chunk(b"avih", bytes(56)) + strls)
    return b"RIFF\xff\xff\xff\xffAVI " + hdrl + chunk(b"JUNK", bytes(7)) + b"LIST\xff\xff\xff\xffmovi"


def packets(data: bytes) -> tuple[avi.Header, list[tuple[str, bytes]]]:
    read = io.BytesIO(data).read
    header = avi.read_header(read)
    out = []
    while (p := avi.read_packet(read, header)) is not None:
        out.append(p)
    return header, out


def test_frames_and_audio_come_out_in_order_with_odd_chunks_skipped():
    frame = bytes(range(24))
    data = stream() + chunk(b"00dc", frame) + chunk(b"ix00", b"x") + chunk(b"01wb", bytes(16)) + chunk(b"00dc", frame)
    header, out = packets(data)
    assert (header.video, header.width, header.height, header.audio, header.channels) == (0, 4, 2, 1, 2)
    assert out == [("video", frame), ("audio", bytes(16)), ("video", frame)]


def test_an_empty_video_chunk_is_a_repeat_not_an_error():
    """ffmpeg's AVI muxer writes a 0-byte chunk for each frame slot its video skips ("no change")."""
    frame = bytes(range(24))
    header, out = packets(stream() + chunk(b"00dc", frame) + chunk(b"00dc", b"") + chunk(b"00dc", frame))
    assert out == [("video", frame), ("video", b""), ("video", frame)]


def test_audio_only_and_video_only_headers():
    assert packets(stream(video=None) + chunk(b"00wb", bytes(8)))[1] == [("audio", bytes(8))]
    header, out = packets(stream(channels=None) + chunk(b"00db", bytes(24)))
    assert header.audio is None and out == [("video", bytes(24))]


@pytest.mark.parametrize("data, says", [
    (stream() + chunk(b"00dc", bytes(25)), "a decoded frame of 25 bytes, not 24"),
    (stream() + b"01wb" + struct.pack("<I", 1 << 30), "audio packet"),
    (stream() + chunk(b"01wb", bytes(6)), "audio packet of 6 bytes"),
    (stream() + b"zzzz" + struct.pack("<I", 1 << 30), "unexpected"),
    (stream() + chunk(b"00dc", bytes(24))[:20], "ended inside a frame"),
    (stream(bits=32), "unexpected decoded frame format"),
    (b"RIFF\0\0\0\0WAVE", "not the expected stream"),
    (b"", "produced no output"),
    (b"RIFF\0\0\0\0AVI " + chunk(b"JUNK", bytes(70_000)), "header is too large"),
])
def test_a_length_that_does_not_fit_is_an_error_not_an_allocation(data, says):
    with pytest.raises(BadChunk, match=says):
        packets(data)
