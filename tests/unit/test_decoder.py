"""The chunk decoder on real ffmpeg: one process per chunk, the same media as one process per stream,
bounded memory when one stream runs far ahead, and sizes that ffmpeg and Python agree on."""

import subprocess
import time

import numpy as np
import pytest

from callstream_lab.synth import generate_call, generate_track
from pipeline.errors import BadChunk
from pipeline.media import decode as decoding
from pipeline.media.decode import StreamDecoder, decode
from pipeline.media.ffargs import DecodeOptions, target_size
from pipeline.media.ffmpeg_bin import ffmpeg_exe

FF = ffmpeg_exe()


@pytest.fixture(scope="module")
def call(tmp_path_factory):
    return generate_call(FF, tmp_path_factory.mktemp("call") / "call.mp4", seconds=6.0)


def spawned(monkeypatch) -> list[list[str]]:
    """The argv of every process the decoder starts."""
    started: list[list[str]] = []
    real = subprocess.Popen

    def popen(argv, *a, **kw):
        started.append(argv)
        return real(argv, *a, **kw)

    monkeypatch.setattr(decoding.subprocess, "Popen", popen)
    return started


def test_one_ffmpeg_per_chunk_gives_what_one_per_stream_gives(call, monkeypatch):
    started = spawned(monkeypatch)
    one = decode(FF, call, 2.0, 480)
    assert len(started) == 1  # no separate probe, no second process
    monkeypatch.setattr(decoding, "LOOKAHEAD_S", -100.0)  # split at the first read
    split = decode(FF, call, 2.0, 480)
    assert len(started) == 1 + 3  # the muxed start, then one process per stream
    assert one.frames.shape == split.frames.shape == (12, 270, 480, 3)
    assert one.audio.shape == split.audio.shape and abs(one.audio.shape[1] / 16000 - 6.0) < 0.05
    assert np.array_equal(one.frames, split.frames) and np.array_equal(one.audio, split.audio)
    assert one.info == split.info and one.info.video.width == 640


def test_a_split_mid_chunk_skips_what_was_already_returned(call, monkeypatch):
    whole = decode(FF, call, 2.0, 480)
    with StreamDecoder(FF, call, 2.0, 480, 60.0) as dec:
        first = dec.read(2.0)
        monkeypatch.setattr(decoding, "LOOKAHEAD_S", -100.0)
        rest = [dec.read(2.0) for _ in range(4)]
        assert dec.finished and dec.video is not None and dec.audio is not None
    frames = np.concatenate([first.frames] + [w.frames for w in rest if len(w.frames)])
    audio = np.concatenate([first.audio] + [w.audio for w in rest], axis=1)
    assert np.array_equal(frames, whole.frames) and np.array_equal(audio, whole.audio)


def test_a_camera_switched_off_early_in_a_long_chunk_keeps_memory_bounded(tmp_path, monkeypatch):
    """Video for 2 s, audio for 70 s: the interleaved pipe would hold all the audio while waiting for
    frames that never come; past the look-ahead the decoder reads each stream from its own process."""
    path = generate_track(FF, tmp_path / "off.mp4", 70.0, video_until=2.0)
    held = []
    real_fill = StreamDecoder._fill

    def fill(self, *a):
        real_fill(self, *a)
        held.append(len(self._samples) + sum(len(f) for f in self._frames))

    monkeypatch.setattr(StreamDecoder, "_fill", fill)
    with StreamDecoder(FF, path, 2.0, 320, 120.0) as dec:
        windows = []
        while not dec.finished:
            windows.append(dec.read(10.0))
        assert dec.video is not None  # it split
    assert sum(len(w.frames) for w in windows) == 4
    assert abs(sum(w.audio.shape[1] for w in windows) / 16000 - 70.0) < 0.1
    assert max(held) <= (10 + decoding.LOOKAHEAD_S + 1) * 16000 * 4  # one channel, never the whole file


def test_an_audio_only_file_and_an_unwanted_stream(call, tmp_path):
    wav = tmp_path / "a.wav"
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=3:sample_rate=8000",
                    "-ac", "2", str(wav)], check=True)
    audio_only = decode(FF, wav, 2.0, 480)
    assert audio_only.frames.shape[0] == 0 and audio_only.audio.shape == (2, 48000)
    with StreamDecoder(FF, call, 2.0, 480, 60.0, audio=False) as dec:
        w = dec.read(60.0)
        assert dec.finished and dec.channels == 0 and len(w.frames) == 12 and w.audio.size == 0
    with pytest.raises(BadChunk, match="asks for video"):
        StreamDecoder(FF, wav, 2.0, 480, 60.0, audio=False)


@pytest.mark.parametrize("size", [(640, 360), (1280, 720), (333, 201), (479, 271), (500, 1000), (101, 57),
                                  (4000, 3000), (2, 2)])
def test_ffmpeg_scales_to_the_size_python_computes(tmp_path, size):
    path = tmp_path / "f.mkv"
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"color=c=red:s={size[0]}x{size[1]}:d=1:r=2", "-c:v", "ffv1", str(path)], check=True)
    with StreamDecoder(FF, path, 2.0, 480, 60.0) as dec:
        assert dec.size == target_size(*size, 480)
        frames = dec.read(5.0).frames
    r, g, b = frames[-1, -1, -1].tolist()  # the last pixel: rows padded in the pipe are unpadded here
    assert len(frames) == 2 and r > 240 and g < 10 and b < 10  # RGB order


def test_the_area_scaler_gives_the_bicubic_frames_within_a_grey_level(call, monkeypatch):
    """The decoder scales by area averaging (cheaper than ffmpeg's default bicubic); the benchmark's
    agreement check decodes the old way, so the setting must reach ffmpeg on every path."""
    area = decode(FF, call, 2.0, 480)
    bicubic = decode(FF, call, 2.0, 480, options=DecodeOptions(scaler="bicubic"))
    assert area.frames.shape == bicubic.frames.shape == (12, 270, 480, 3)
    assert not np.array_equal(area.frames, bicubic.frames)
    assert np.abs(area.frames.astype(np.int16) - bicubic.frames).mean() < 2.0
    monkeypatch.setattr(decoding, "LOOKAHEAD_S", -100.0)  # the per-stream processes scale the same way
    assert np.array_equal(decode(FF, call, 2.0, 480).frames, area.frames)
    assert np.array_equal(decode(FF, call, 2.0, 480, options=DecodeOptions(scaler="bicubic")).frames, bicubic.frames)
    with pytest.raises(ValueError, match="scaler"):
        StreamDecoder(FF, call, 2.0, 480, 60.0, DecodeOptions(scaler="area,drawtext"))


def test_more_channels_than_a_map_can_name_are_bounded(tmp_path, monkeypatch):
    path = tmp_path / "many.wav"
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=2:sample_rate=16000",
                    "-af", "pan=10c|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0|c8=c0|c9=c0", str(path)],
                   check=True)
    started = spawned(monkeypatch)
    decoded = decode(FF, path, 2.0, 480)
    assert decoded.audio.shape == (decoding.MAX_CHANNELS, 32000)
    assert "-ac" in started[-1] and len(started) == 2  # decoded again with the channels bounded


def test_a_file_with_too_many_channels_is_restarted_with_them_bounded(call, tmp_path, monkeypatch):
    """Ten channels where the container's header let the first process through: it is replaced by one
    with its channels bounded, and the chunk decodes."""
    mkv = tmp_path / "many.mkv"
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-i", str(call), "-map", "0:v", "-map", "0:a",
                    "-c:v", "copy", "-c:a", "pcm_s16le",
                    "-af", "pan=10c|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0|c8=c0|c9=c0", str(mkv)],
                   check=True)
    started = spawned(monkeypatch)
    decoded = decode(FF, mkv, 2.0, 480)
    assert len(started) == 2 and "-ac" not in started[0] and "-ac" in started[1]
    assert decoded.audio.shape[0] == decoding.MAX_CHANNELS and len(decoded.frames) == 12


def test_a_four_channel_recording_keeps_its_channels(tmp_path):
    """More than two channels come declared as WAVE_FORMAT_EXTENSIBLE; a channel map names any of them."""
    path = tmp_path / "four.wav"
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=2:sample_rate=16000",
                    "-af", "pan=4c|c0=c0|c1=0*c0|c2=c0|c3=0*c0", str(path)], check=True)
    audio = decode(FF, path, 2.0, 480).audio
    assert audio.shape == (4, 32000)
    assert np.abs(audio[0]).max() > 0.1 and np.abs(audio[1]).max() == 0 and np.abs(audio[2]).max() > 0.1


def test_one_process_that_stops_early_is_retried_one_stream_at_a_time(call, monkeypatch):
    """A damaged file can end the shared demux at the first broken sample of either stream; read on its
    own, the other stream may be whole. The muxed output is cut after a few packets here."""
    whole = decode(FF, call, 2.0, 480)
    real = decoding.avi.read_packet
    count = {"n": 0}

    def read_packet(read, header):
        count["n"] += 1
        if count["n"] <= 5:
            return real(read, header)
        while read(1 << 16):  # the rest never arrives: ffmpeg ends as if its demuxer had given up
            pass
        return None

    monkeypatch.setattr(decoding.avi, "read_packet", read_packet)
    with StreamDecoder(FF, call, 2.0, 480, 60.0) as dec:
        windows = [dec.read(2.0) for _ in range(4)]
        assert dec.finished and dec.video is not None and dec.audio is not None
    assert np.array_equal(np.concatenate([w.frames for w in windows if len(w.frames)]), whole.frames)
    assert np.array_equal(np.concatenate([w.audio for w in windows], axis=1), whole.audio)


@pytest.mark.parametrize("budget_s", [0.0, 0.3])
def test_a_decode_past_its_budget_is_killed_and_named(call, budget_s):
    """The budget comes from what the container declares, after the report; the watchdog re-armed with
    it kills ffmpeg wherever the decode is (reading the header, or between windows)."""
    with pytest.raises(BadChunk) as err:
        with StreamDecoder(FF, call, 2.0, 480, lambda info: budget_s) as dec:
            while not dec.finished:
                dec.read(0.5)
                time.sleep(0.1)
    assert err.value.reason == "decode_timeout"


def _remux(src, dst, *video_args):
    """src's audio and video in Matroska; video_args apply to the video's input (an -itsoffset)."""
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *video_args, "-i", str(src),
                    "-map", "1:v", "-map", "0:a", "-c", "copy", str(dst)], check=True)


def test_a_video_that_starts_after_its_audio_keeps_its_frames_in_place(call, tmp_path, monkeypatch):
    """A camera switched on 2 s into a chunk. The muxer's frame slots before it used to be refused as
    "a decoded frame of 0 bytes"; now the video is padded to the chunk's start with its first picture
    and every later frame is at its own time, in one process or split per stream."""
    on_time, late = tmp_path / "on_time.mkv", tmp_path / "late.mkv"
    _remux(call, on_time)
    _remux(call, late, "-itsoffset", "2")
    base, shifted = decode(FF, on_time, 2.0, 480), decode(FF, late, 2.0, 480)
    n = len(base.frames)
    assert len(shifted.frames) == n + 4
    assert np.array_equal(shifted.frames[4:], base.frames)   # slot k + 4 (2 s later) is slot k
    assert all(np.array_equal(f, shifted.frames[0]) for f in shifted.frames[1:4])  # padded with its first picture
    assert np.array_equal(shifted.audio, base.audio)
    monkeypatch.setattr(decoding, "LOOKAHEAD_S", -100.0)
    split = decode(FF, late, 2.0, 480)
    assert np.array_equal(split.frames, shifted.frames) and np.array_equal(split.audio, shifted.audio)
