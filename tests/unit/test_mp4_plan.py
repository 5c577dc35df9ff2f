"""MP4/MOV chunks as recorders publish them (not re-cut into Matroska): the frames no sample needs are
planned from the sample tables and dropped before decoding, with the same frames and audio byte for
byte on real ffmpeg; anything unusual (fragments, an edit list that shifts the video, B-frames'
offsets, recovery points that are not IDRs) is not planned; hostile bytes never fail the reader.
Fragmented MP4 (moof/traf/trun) is planned the same way."""

import random
import subprocess

import numpy as np
import pytest

from pipeline.media import decode as decoding
from pipeline.media import gop, mp4
from pipeline.media.decode import decode
from pipeline.media.ffargs import DecodeOptions
from pipeline.media.ffmpeg_bin import ffmpeg_exe

FF = ffmpeg_exe()
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-sc_threshold", "0"]

# name: (fps, codec options, planned?)
CASES = {
    "h264-30fps-1s.mp4": (30, [*X264, "-g", "30"], True),
    "h264-24fps-2s.mp4": (24, [*X264, "-g", "48"], True),
    "h264-15fps-2s.mov": (15, [*X264, "-g", "30"], True),
    "vp9-30fps-1s.mp4": (30, ["-c:v", "libvpx-vp9", "-g", "30", "-b:v", "300k", "-deadline", "good",
                              "-cpu-used", "8"], True),
    # 13 frames missing in the middle: a recorder that paused; timestamps keep their gap
    "h264-vfr.mp4": (30, ["-vf", "select='not(between(n,40,52))'", "-fps_mode", "passthrough", *X264, "-g", "30"],
                     True),
    # B-frames: the muxer writes an edit list that shifts the video by the reorder delay
    "h264-bframes.mp4": (25, ["-c:v", "libx264", "-preset", "veryfast", "-g", "12", "-bf", "3",
                              "-sc_threshold", "0"], False),
    # periodic intra refresh: sync samples that are recovery points, no IDR after the first frame
    "h264-intra-refresh.mp4": (30, ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0",
                                    "-x264-params", "intra-refresh=1:keyint=30"], False),
    # ... and without one: ffmpeg moves the times back by a delay of its own
    "h264-bframes-no-edit-list.mp4": (25, ["-c:v", "libx264", "-preset", "veryfast", "-g", "12", "-bf", "3",
                                           "-sc_threshold", "0", "-use_editlist", "0"], False),
    # fragmented MP4 (a live recorder's, a browser's): samples in moof fragments, data offsets stated
    # in each fragment's header, or counted from the moof, one fragment per group or per frame
    "h264-fragmented.mp4": (30, [*X264, "-g", "30", "-movflags", "frag_keyframe+empty_moov"], True),
    "h264-fragmented-moof-base.mp4": (30, [*X264, "-g", "30", "-movflags",
                                           "frag_keyframe+empty_moov+default_base_moof"], True),
    "h264-fragment-per-frame.mp4": (24, [*X264, "-g", "48", "-movflags",
                                         "empty_moov+default_base_moof+frag_every_frame"], True),
    "h264-fragmented-vfr.mp4": (30, ["-vf", "select='not(between(n,40,52))'", "-fps_mode", "passthrough", *X264,
                                     "-g", "30", "-movflags", "frag_keyframe+empty_moov"], True),
    "vp9-fragmented.mp4": (30, ["-c:v", "libvpx-vp9", "-g", "30", "-b:v", "300k", "-deadline", "good",
                                "-cpu-used", "8", "-movflags", "frag_keyframe+empty_moov"], True),
    # not planned: B-frames in fragments; the first group's samples in the moov, the rest in fragments
    "h264-fragmented-bframes.mp4": (25, ["-c:v", "libx264", "-preset", "veryfast", "-g", "12", "-bf", "3",
                                         "-sc_threshold", "0", "-movflags", "frag_keyframe+empty_moov"], False),
    "h264-fragmented-moov-samples.mp4": (30, [*X264, "-g", "30", "-movflags", "frag_keyframe"], False),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("mp4")
    for name, (fps, codec, _) in CASES.items():
        subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=s=320x240:r={fps}:d=4.2", "-f", "lavfi", "-i", "sine=f=440:d=4.2", *codec,
                        "-c:a", "aac", str(d / name)], check=True)
    return {name: d / name for name in CASES}


def _both(path, fps=2.0):
    return decode(FF, path, fps, 480, options=DecodeOptions(drop_unsampled=False)), decode(FF, path, fps, 480)


@pytest.mark.parametrize("name", list(CASES))
def test_dropping_what_no_sample_needs_gives_the_same_frames(media, name):
    full, dropped = _both(media[name])
    assert len(full.frames) >= 8
    assert np.array_equal(full.frames, dropped.frames) and np.array_equal(full.audio, dropped.audio)
    assert full.duration_ms == dropped.duration_ms
    index = mp4.read_index(media[name])
    planned = index is not None and index.video is not None and bool(gop.unneeded(index.video, 2.0, index.tick_ns))
    assert planned == CASES[name][2]


@pytest.mark.parametrize("fps", [1.0, 3.0, 2.5])
def test_other_sampling_rates_get_the_same_frames(media, fps):
    for name in ("h264-30fps-1s.mp4", "h264-vfr.mp4", "h264-fragmented.mp4", "h264-fragment-per-frame.mp4"):
        full, dropped = _both(media[name], fps)
        assert np.array_equal(full.frames, dropped.frames)


def test_the_decoder_asks_ffmpeg_to_drop_them_and_keeps_the_stream_info_pass(media, monkeypatch):
    started = []
    real = subprocess.Popen
    monkeypatch.setattr(decoding.subprocess, "Popen",
                        lambda argv, *a, **kw: started.append(argv) or real(argv, *a, **kw))
    decode(FF, media["h264-30fps-1s.mp4"], 2.0, 480)
    argv = started[0]
    assert "-nofind_stream_info" not in argv
    assert argv.index("-bsf:v") < argv.index("-i")
    # 30 fps in a 15360 Hz timescale: frames 23-29 of the first second are 512 ticks apart
    assert "between(pts,11776,14848)" in argv[argv.index("-bsf:v") + 1]


def test_hostile_bytes_never_fail_the_index(media, tmp_path):
    good = media["h264-30fps-1s.mp4"].read_bytes()
    rng = random.Random(11)
    cases = [b"", bytes(64), b"\x00\x00\x00\x01moov" + bytes(8), b"\x00\x00\x00\x00moov", good[:100],
             good[: len(good) // 2]]
    moov = good.index(b"moov") - 4
    for _ in range(200):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            i = moov + rng.randrange(len(good) - moov)   # the sample tables, where a lie can hurt
            data[i] = rng.randrange(256)
        cases.append(bytes(data[: rng.randint(1, len(data))] if rng.random() < 0.3 else data))
    path = tmp_path / "x.mp4"
    for data in cases:
        path.write_bytes(data)
        index = mp4.read_index(path)
        assert index is None or isinstance(index, mp4.Index)
        if index is not None and index.video:
            gop.drop_filter(index.video, 2.0, index.tick_ns)


def test_the_work_a_chunk_can_ask_for_is_bounded(media, monkeypatch):
    monkeypatch.setattr(mp4, "MAX_BLOCKS", 50)
    assert mp4.read_index(media["h264-30fps-1s.mp4"]) is None


def test_a_key_frame_larger_than_the_bytes_checked_is_still_one(media, monkeypatch):
    """At 720p an IDR slice is larger than the prefix read to check it (64 KiB): the NAL unit's header,
    inside the prefix, says what it is, so such files are planned, with the same frames."""
    monkeypatch.setattr(mp4, "CHECK_PREFIX", 1024)   # past x264's SEI, short of every IDR slice
    for name in ("h264-30fps-1s.mp4", "h264-fragmented.mp4"):
        index = mp4.read_index(media[name])
        assert index is not None and index.video is not None and sum(p.key for p in index.video) == 5
        full, dropped = _both(media[name])
        assert np.array_equal(full.frames, dropped.frames)


def test_checking_sync_samples_is_bounded(media, monkeypatch):
    """Tables may point every sample at one huge region: the bytes read to check sync samples are
    bounded, past that the file is not planned (decoded whole)."""
    monkeypatch.setattr(mp4, "MAX_CHECKED", 1000)
    assert mp4.read_index(media["h264-30fps-1s.mp4"]) is None


def _shift_fragments(data: bytes, seconds: int, timescales: dict[int, int]) -> bytes:
    """Each fragment's decode time (tfdt) moved on by `seconds`, in its track's timescale: a live
    recorder's chunk stamped with its call time."""
    out = bytearray(data)
    pos = 0
    while (pos := out.find(b"tfhd", pos)) >= 0:
        track = int.from_bytes(out[pos + 8:pos + 12], "big")
        at = out.find(b"tfdt", pos)
        assert out[at + 4] == 1   # version 1: a 64-bit time
        t = int.from_bytes(out[at + 8:at + 16], "big") + seconds * timescales[track]
        out[at + 8:at + 16] = t.to_bytes(8, "big")
        pos = at
    return bytes(out)


def test_a_fragmented_chunk_stamped_with_its_call_time_is_planned_from_its_fragments(media, tmp_path):
    """A recorder's fragments carry the call's running time (37 s in); ffmpeg starts the chunk there,
    the plan compares the same times, and the chunk is neither truncated nor decoded differently."""
    path = tmp_path / "call-37s.mp4"
    path.write_bytes(_shift_fragments(media["h264-fragmented.mp4"].read_bytes(), 37, {1: 15360, 2: 44100}))
    index = mp4.read_index(path)
    assert index is not None and index.video is not None and index.video[0].pts == 37 * 15360
    assert gop.unneeded(index.video, 2.0, index.tick_ns)
    full, dropped = _both(path)
    plain = decode(FF, media["h264-fragmented.mp4"], 2.0, 480)
    assert np.array_equal(full.frames, dropped.frames) and np.array_equal(dropped.frames, plain.frames)
    assert abs(dropped.duration_ms - plain.duration_ms) < 50


def test_hostile_bytes_never_fail_the_fragment_reader(media, tmp_path):
    good = media["h264-fragmented.mp4"].read_bytes()
    rng = random.Random(12)
    first = good.index(b"moof") - 4
    path = tmp_path / "x.mp4"
    for _ in range(200):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            i = first + rng.randrange(min(4096, len(good) - first))   # fragment headers and runs
            data[i] = rng.randrange(256)
        path.write_bytes(bytes(data))
        index = mp4.read_index(path)
        assert index is None or isinstance(index, mp4.Index)
        if index is not None and index.video:
            gop.drop_filter(index.video, 2.0, index.tick_ns)


def test_empty_boxes_cannot_make_the_reader_walk_forever(media, tmp_path, monkeypatch):
    """Boxes are 8 bytes each: a chunk of empty ones, at the top or inside a fragment, is a bounded
    walk that ends in no plan."""
    monkeypatch.setattr(mp4, "MAX_BLOCKS", 1000)
    good = media["h264-fragmented.mp4"].read_bytes()
    path = tmp_path / "x.mp4"
    path.write_bytes(good + b"\x00\x00\x00\x08free" * 2000)
    assert mp4.read_index(path) is None
    moof = good.index(b"moof") - 4
    traf = good.index(b"traf") - 4
    size = int.from_bytes(good[traf:traf + 4], "big")
    padding = b"\x00\x00\x00\x08free" * 100
    grown = (good[:moof] + (int.from_bytes(good[moof:moof + 4], "big") + len(padding)).to_bytes(4, "big")
             + good[moof + 4:traf] + (size + len(padding)).to_bytes(4, "big") + good[traf + 4:traf + size]
             + padding + good[traf + size:])
    path.write_bytes(grown)
    assert mp4.read_index(path) is None
    monkeypatch.setattr(mp4, "MAX_FRAGMENT_BOXES", 1000)
    assert mp4.read_index(path) is not None   # the bound, not the padding, said no
