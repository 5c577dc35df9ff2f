"""Frames no sample needs are dropped before decoding: the same frames and audio, byte for byte, on
real ffmpeg across codecs, group lengths, B-frames, variable frame rates and sampling rates; and the
Matroska index that plans it reads hostile bytes without failing."""

import random
import subprocess

import numpy as np
import pytest

from pipeline.media import decode as decoding
from pipeline.media import gop, mkv
from pipeline.media.decode import decode
from pipeline.media.ffargs import DecodeOptions
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.media.mkv import Packet

FF = ffmpeg_exe()

CASES = {
    "h264-30fps-1s": (30, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0",
                           "-sc_threshold", "0"]),
    "h264-bframes-25fps": (25, ["-c:v", "libx264", "-preset", "veryfast", "-g", "12", "-bf", "3",
                                "-sc_threshold", "0"]),
    "h264-15fps-2s": (15, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-sc_threshold", "0"]),
    "vp8": (30, ["-c:v", "libvpx", "-g", "30", "-b:v", "300k", "-deadline", "realtime", "-cpu-used", "8"]),
    "vp9": (30, ["-c:v", "libvpx-vp9", "-g", "30", "-b:v", "300k", "-deadline", "good", "-cpu-used", "8",
                 "-auto-alt-ref", "1", "-lag-in-frames", "16"]),
    # 13 frames missing in the middle: a recorder that paused; timestamps keep their gap
    "h264-vfr": (30, ["-vf", "select='not(between(n,40,52))'", "-fps_mode", "passthrough", "-c:v", "libx264",
                      "-preset", "ultrafast", "-g", "30", "-bf", "0", "-sc_threshold", "0"]),
    # periodic intra refresh: key flags on recovery points, no IDR after the first frame
    "h264-intra-refresh": (30, ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0",
                                "-x264-params", "intra-refresh=1:keyint=30"]),
}


def _make(path, fps, codec, seconds=4.2):
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=s=320x240:r={fps}:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=f=440:d={seconds}", *codec,
                    "-c:a", "libopus" if "libvpx" in " ".join(codec) else "aac", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("gop")
    return {name: _make(d / f"{name}.mkv", fps, codec) for name, (fps, codec) in CASES.items()}


def _both(path, monkeypatch, fps=2.0):
    full = decode(FF, path, fps, 480, options=DecodeOptions(drop_unsampled=False))
    return full, decode(FF, path, fps, 480)


@pytest.mark.parametrize("name", list(CASES))
def test_dropping_what_no_sample_needs_gives_the_same_frames(media, name, monkeypatch):
    full, dropped = _both(media[name], monkeypatch)
    assert len(full.frames) >= 8
    assert np.array_equal(full.frames, dropped.frames) and np.array_equal(full.audio, dropped.audio)
    assert full.duration_ms == dropped.duration_ms
    index = mkv.read_index(media[name])
    assert index is not None and index.start == 0 and index.video is not None
    planned = gop.unneeded(index.video, 2.0, index.tick_ns)
    if name == "h264-intra-refresh":
        assert sum(p.key for p in index.video) == 1 and planned == []  # recovery points are not IDRs
    elif name != "h264-15fps-2s":
        assert planned, "a chunk with key frames every second has frames no sample needs"


@pytest.mark.parametrize("fps", [1.0, 3.0, 2.5])
def test_other_sampling_rates_get_the_same_frames(media, fps, monkeypatch):
    full, dropped = _both(media["h264-bframes-25fps"], monkeypatch, fps)
    assert np.array_equal(full.frames, dropped.frames)
    full, dropped = _both(media["h264-30fps-1s"], monkeypatch, fps)
    assert np.array_equal(full.frames, dropped.frames)


def test_one_process_per_stream_drops_the_same_and_gets_the_same(media, monkeypatch):
    full, _ = _both(media["h264-bframes-25fps"], monkeypatch)
    monkeypatch.setattr(decoding, "LOOKAHEAD_S", -100.0)  # split into per-stream processes at once
    split = decode(FF, media["h264-bframes-25fps"], 2.0, 480)
    assert np.array_equal(full.frames, split.frames) and np.array_equal(full.audio, split.audio)


def test_the_decoder_asks_ffmpeg_to_drop_them(media, monkeypatch):
    started = []
    real = subprocess.Popen
    monkeypatch.setattr(decoding.subprocess, "Popen",
                        lambda argv, *a, **kw: started.append(argv) or real(argv, *a, **kw))
    decode(FF, media["h264-30fps-1s"], 2.0, 480)
    argv = started[0]
    assert "-nofind_stream_info" in argv
    assert argv.index("-bsf:v") < argv.index("-i")  # an input option: before the decoder
    assert "between(pts,767,967)" in argv[argv.index("-bsf:v") + 1]  # frames 23-29 of the first second


def test_a_chunk_stamped_from_its_call_time_decodes_to_its_own_length(media, tmp_path):
    """A recorder that keeps the call's running timestamps in each chunk: without ffmpeg's stream-info
    pass the decoder would pad it from zero, 10 s of copies of its first frame."""
    later = tmp_path / "later.mkv"
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-y", "-i", str(media["h264-30fps-1s"]),
                    "-c", "copy", "-output_ts_offset", "10", str(later)], check=True)
    index = mkv.read_index(later)
    assert index is not None and index.start == 10_000
    got = decode(FF, later, 2.0, 480)
    want = decode(FF, media["h264-30fps-1s"], 2.0, 480)
    assert got.frames.shape == want.frames.shape and abs(got.duration_ms - want.duration_ms) <= 50
    assert np.abs(got.frames.astype(np.int16) - want.frames).mean() < 1.0


def _packets(*keys_at: int, n: int = 90, step: int = 33) -> list[Packet]:
    return [Packet(i * step + i // 3, i in keys_at) for i in range(n)]  # 30 fps in ms ticks


def test_the_unneeded_frames_are_each_closed_groups_tail():
    packets = _packets(0, 30, 60)
    drop = gop.unneeded(packets, 2.0, 1_000_000)
    assert drop == list(range(23, 30)) + list(range(53, 60))  # not the last group's
    assert gop.drop_ranges(packets, drop) == [(packets[23].pts, packets[29].pts), (packets[53].pts, packets[59].pts)]
    assert gop.unneeded(_packets(), 2.0, 1_000_000) == []  # no random-access point: nothing
    assert gop.unneeded(_packets(0), 2.0, 1_000_000) == []  # one group: it is the last


def test_a_group_that_shows_a_frame_after_the_next_key_is_kept_whole():
    packets = _packets(0, 30, 60)
    packets[25] = Packet(packets[31].pts + 1, False)  # shown after the key that follows it
    assert all(i >= 53 for i in gop.unneeded(packets, 2.0, 1_000_000))


def test_a_timestamp_a_kept_packet_shares_is_never_dropped():
    packets = _packets(0, 30, 60)
    packets[40] = Packet(packets[25].pts, False)
    ranges = gop.drop_ranges(packets, gop.unneeded(packets, 2.0, 1_000_000))
    assert all(not lo <= packets[25].pts <= hi for lo, hi in ranges)


def test_slots_round_halves_away_from_zero_as_the_fps_filter_does():
    from fractions import Fraction
    per_tick = Fraction(2, 1000)
    assert [gop._slot(t, per_tick) for t in (0, 249, 250, 251, 749, 750, -250, -251)] == [0, 0, 1, 1, 1, 2, -1, -1]


def test_hostile_bytes_never_fail_the_index(media, tmp_path):
    good = media["h264-bframes-25fps"].read_bytes()
    rng = random.Random(7)
    cases = [b"", b"\x1a\x45\xdf\xa3", b"\x1a\x45\xdf\xa3\x80\x18\x53\x80\x67\xff", bytes(64), good[:100],
             good[: len(good) // 2]]
    for _ in range(150):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        cases.append(bytes(data[: rng.randint(1, len(data))] if rng.random() < 0.3 else data))
    path = tmp_path / "x.mkv"
    for data in cases:
        path.write_bytes(data)
        index = mkv.read_index(path)
        assert index is None or isinstance(index, mkv.Index)
        if index is not None and index.video:
            gop.drop_filter(index.video, 2.0, index.tick_ns)


def _video_block_flags(data: bytes, track: int) -> list[int]:
    """Offsets of the flags byte of each SimpleBlock of `track` (known-size elements only)."""
    buf, out = memoryview(data), []
    for eid, s, e, _ in mkv._elements(buf, 0, len(buf)):
        if eid != mkv.SEGMENT:
            continue
        for cid, cs, ce, _ in mkv._elements(buf, s, e):
            if cid != mkv.CLUSTER:
                continue
            for bid, bs, be, _ in mkv._elements(buf, cs, ce):
                if bid == mkv.SIMPLE_BLOCK:
                    number, n, _ = mkv._vint(buf, bs, be)
                    if number == track:
                        out.append(bs + n + 2)
    return out


def test_a_laced_or_invisible_video_frame_is_not_planned(media, tmp_path):
    data = bytearray(media["h264-30fps-1s"].read_bytes())
    index = mkv.read_index(media["h264-30fps-1s"])
    assert index is not None and index.video is not None
    offsets = _video_block_flags(bytes(data), 1)
    assert len(offsets) == len(index.video)
    for bit in (0x08, 0x02):
        changed = bytearray(data)
        changed[offsets[40]] |= bit
        path = tmp_path / f"flag{bit}.mkv"
        path.write_bytes(bytes(changed))
        assert mkv.read_index(path) is None  # so: the stream-info pass, and every frame decoded


def test_the_work_a_chunk_can_ask_for_is_bounded(media, monkeypatch):
    """A chunk of endless tiny blocks is not planned past MAX_BLOCKS (the reader stops and every frame
    is decoded); a plan never hands ffmpeg more than MAX_RANGES terms to evaluate per packet."""
    monkeypatch.setattr(mkv, "MAX_BLOCKS", 50)
    assert mkv.read_index(media["h264-30fps-1s"]) is None
    monkeypatch.undo()
    packets = _packets(*range(0, 30 * 400, 30), n=30 * 400)  # 400 one-second groups
    assert len(gop.drop_ranges(packets, gop.unneeded(packets, 2.0, 1_000_000))) == gop.MAX_RANGES
    assert gop.drop_filter(packets, 2.0, 1_000_000).count("between(") == gop.MAX_RANGES
