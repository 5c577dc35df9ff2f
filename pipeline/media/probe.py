"""What is inside a media file, read from ffmpeg's own stream report (no ffprobe in the wheel build).

The parsing is a pure function of ffmpeg's stderr so it is unit-tested on captured reports.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadChunk

_DURATION = re.compile(r"^Duration: (\d+):(\d+):(\d+(?:\.\d+)?)(?:, start: (-?\d+(?:\.\d+)?))?")
_VIDEO = re.compile(r"^Stream #0:\d+[^:]*: Video: (\w+).*?, (\d{1,5})x(\d{1,5})")
_FPS = re.compile(r"(\d+(?:\.\d+)?) fps")
_AUDIO = re.compile(r"^Stream #0:\d+[^:]*: Audio: (\w+)[^,]*, (\d+) Hz, ([^,]+)")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "quad": 4, "quad(side)": 4,
            "4.0": 4, "5.0": 5, "5.0(side)": 5, "5.1": 6, "5.1(side)": 6, "6.1": 7, "7.1": 8}


@dataclass(frozen=True)
class VideoStream:
    codec: str
    width: int
    height: int
    fps: float | None


@dataclass(frozen=True)
class AudioStream:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MediaInfo:
    duration_ms: int | None
    video: VideoStream | None
    audio: AudioStream | None


def channel_count(layout: str) -> int:
    layout = layout.strip()
    m = re.match(r"(\d+) channels", layout)
    if m:
        return int(m.group(1))
    return _LAYOUTS.get(layout, 2)


def parse_report(stderr: str) -> MediaInfo:
    """Streams and duration from the lines that start with them: a metadata value (a title that reads
    "Stream #0:0: Video: h264, 16x16") is printed after its key, so it can never pass for one."""
    # Only the input section: stop where ffmpeg starts describing outputs.
    text = stderr.split("Output #0")[0]
    if "Input #0" not in text:
        last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no report"]
        raise BadChunk("undecodable", last[0].strip()[:300])
    lines = [raw.strip() for raw in text.splitlines()]
    duration = None
    m = next((m for line in lines if (m := _DURATION.search(line))), None)
    if m:
        h, mi, s, start_s = m.groups()
        duration = int(round((int(h) * 3600 + int(mi) * 60 + float(s)) * 1000))
        start = float(start_s or 0.0)  # printed on the Duration line itself
        if ("Input #0, matroska" in text or "Input #0, mov" in text) and 0 < start * 1000 < duration:
            # ffmpeg's Matroska muxer writes where the last frame ends as the Duration, and ffmpeg reads
            # a fragmented MP4's the same way (each fragment states its decode time): a chunk stamped
            # from 10 s into its call would read as 10 s longer than it is, and as truncated.
            duration -= int(round(start * 1000))
    video = audio = None
    for line in lines:
        if video is None and (v := _VIDEO.search(line)) and "attached pic" not in line:
            fps = _FPS.search(line)
            video = VideoStream(v.group(1), int(v.group(2)), int(v.group(3)), float(fps.group(1)) if fps else None)
        if audio is None and (a := _AUDIO.search(line)):
            audio = AudioStream(a.group(1), int(a.group(2)), channel_count(a.group(3)))
    return MediaInfo(duration, video, audio)


def probe(ffmpeg: str, source: Path | list[str], timeout: float = 30.0) -> MediaInfo:
    """`source` is a trusted path, or input arguments that pin the demuxer (ffargs.input_args)."""
    inputs = ["-i", str(source)] if isinstance(source, Path) else list(source)
    try:
        proc = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-threads", "1", *inputs],
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BadChunk("decode_timeout", f"reading the container header took longer than {timeout:.0f}s") from None
    return require_streams(parse_report(proc.stderr.decode(errors="replace")[:200_000]))


def require_streams(info: MediaInfo) -> MediaInfo:
    if info.video is None and info.audio is None:
        raise BadChunk("no_media_streams", "neither a video nor an audio stream")
    return info
