"""Decode a chunk into sampled RGB frames and 16 kHz float PCM, a window at a time.

Every byte of a chunk is untrusted, so ffmpeg only ever reads the chunk itself: the container is
recognised from its first bytes, ffmpeg is told that one demuxer (`-f`, `-format_whitelist`) and the
`file` protocol only, so playlists, concat scripts and references to other files or URLs never open.
Frames and audio come out of two ffmpeg processes as streams and are read `window` seconds at a time,
so memory does not grow with a chunk's length or resolution; a watchdog kills both processes when the
chunk's decode budget (scaled by its declared duration) runs out. The decoder does the sampling and
scaling (fps and scale filters), so only the frames the model needs ever cross a pipe. Commands are
argument lists: nothing from a message reaches a shell.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import ffmpeg
import numpy as np

from pipeline.errors import BadChunk
from pipeline.media.probe import MediaInfo, probe

AUDIO_RATE = 16_000
MAX_CHANNELS = 8          # an audio-channels map names at most 8; more are never analysed
SNIFF_BYTES = 4096


def sniff_container(head: bytes) -> str | None:
    """The ffmpeg demuxer for the chunk's container, from its magic bytes; None = not one we read.

    Only self-contained media containers are accepted. Text formats (HLS/DASH playlists, ffconcat,
    SDP), image sequences and anything else that can name another file or URL are not."""
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"styp", b"moof"):
        return "mov"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if len(head) >= 377 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "mpegts"
    return None


def input_args(path: Path, demuxer: str, fast: bool = False) -> list[str]:
    """ffmpeg input options that pin the demuxer and forbid every protocol but reading this file."""
    args = ["-f", demuxer, "-format_whitelist", demuxer, "-protocol_whitelist", "file"]
    if fast:
        args += ["-skip_loop_filter", "all"]  # deblocking: invisible after the downscale for faces
    return args + ["-i", f"file:{path}"]


def target_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Fit inside a target_width square (never upscale), both sides even as yuv-derived filters prefer.

    Landscape frames scale to target_width wide as before; a tall or huge frame (8192x8192) is bounded
    too, so a frame's bytes never depend on the sender's resolution."""
    scale = min(1.0, target_width / max(width, 1), target_width / max(height, 1))
    w = int(round(width * scale))
    w -= w % 2
    h = int(round(height * scale / 2)) * 2
    return max(w, 2), max(h, 2)


def is_truncated(declared_ms: int | None, decoded_ms: float) -> bool:
    """A file cut short still opens when its index comes first, and decodes (exit 0) up to the cut;
    what gives it away is decoding much less than the container declares."""
    if not declared_ms:
        return False
    return decoded_ms < declared_ms - max(500.0, 0.1 * declared_ms)


@dataclass
class Window:
    """What one read produced: frames from index `first_frame`, audio from sample `first_sample`."""
    first_frame: int
    frames: np.ndarray      # (N, H, W, 3) uint8
    first_sample: int
    audio: np.ndarray       # (C, S) float32


class _Stderr(threading.Thread):
    """Drains a process's stderr so it can never block on a full pipe; keeps only the last lines."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self.partial = False
        self.start()

    def run(self) -> None:
        for raw in iter(self.pipe.readline, b""):
            line = raw.decode(errors="replace").strip()[:300]
            self.partial = self.partial or "partial file" in line
            if line:
                self.lines.append(line)


class StreamDecoder:
    """Two ffmpeg processes (sampled frames, PCM) over one chunk file, read a window at a time.

    Not thread-safe; one reader thread at a time, `close()` from any thread (it kills the processes,
    which ends a blocked read at once: that is how cancellation and the deadline stop a decode)."""

    def __init__(self, ffmpeg_bin: str, path: Path, fps: float, frame_width: int,
                 timeout_s: float | Callable[[MediaInfo], float], fast: bool = True,
                 video: bool = True, audio: bool = True) -> None:
        """`timeout_s` may be a function of what the container declares (a budget that scales).
        `video`/`audio` False: that stream is nobody's (an audio-only chunk of a participant whose
        recorder muxed a picture in, say) and is never decoded."""
        with open(path, "rb") as f:
            demuxer = sniff_container(f.read(SNIFF_BYTES))
        if demuxer is None:
            raise BadChunk("undecodable", "not a media container callstream reads "
                                          "(MP4/MOV, Matroska/WebM, MPEG-TS, Ogg, WAV, FLAC)")
        info = probe(ffmpeg_bin, input_args(path, demuxer))
        if (video and info.video is None or not video) and (audio and info.audio is None or not audio):
            wanted = " and ".join(k for k, w in (("video", video), ("audio", audio)) if w)
            raise BadChunk("no_media_streams", f"the chunk's media header asks for {wanted}, which it lacks")
        self.info: MediaInfo = dataclasses.replace(info, video=info.video if video else None,
                                                   audio=info.audio if audio else None)
        # The container's length may be that of a stream left undecoded: then it proves no truncation.
        self._whole = self.info == info
        self.fps = fps
        self.timeout_s = timeout_s(self.info) if callable(timeout_s) else timeout_s
        self.size: tuple[int, int] | None = None
        self.channels = min(self.info.audio.channels, MAX_CHANNELS) if self.info.audio else 0
        self.timed_out = False
        self._procs: list[subprocess.Popen[bytes]] = []
        self._errs: list[_Stderr] = []
        self.video: subprocess.Popen[bytes] | None = None
        self.audio: subprocess.Popen[bytes] | None = None
        self.frames_read = self.samples_read = 0
        self.video_done = self.info.video is None
        self.audio_done = self.info.audio is None
        self._timer = threading.Timer(self.timeout_s, self._expire)
        self._timer.daemon = True
        src = ffmpeg.input("x")  # placeholder input; the real, pinned input options are spliced in
        quiet = ("-hide_banner", "-nostdin", "-loglevel", "error", "-threads", "2")
        try:
            if self.info.video is not None:
                self.size = target_size(self.info.video.width, self.info.video.height, frame_width)
                out = (src.video.filter("fps", fps=fps).filter("scale", self.size[0], self.size[1])
                       .output("pipe:", format="rawvideo", pix_fmt="rgb24"))
                self.video = self._spawn(out.global_args(*quiet).compile(cmd=ffmpeg_bin), path, demuxer, fast)
            if self.info.audio is not None:
                # aresample async: a gap in the stream's timestamps (a muted track, a recorder pause) becomes
                # silence, so every sample stays at its own call time; raw PCM would close the gap and
                # shift all later audio early.
                out = (src.audio.filter("aresample", **{"async": 1, "first_pts": 0})
                       .output("pipe:", format="f32le", acodec="pcm_f32le", ac=self.channels, ar=AUDIO_RATE))
                self.audio = self._spawn(out.global_args(*quiet).compile(cmd=ffmpeg_bin), path, demuxer, False)
        except BaseException:
            self.close()  # the first ffmpeg must not outlive a failed start of the second
            raise
        self._timer.start()

    def _spawn(self, argv: list[str], path: Path, demuxer: str, fast: bool) -> subprocess.Popen[bytes]:
        i = argv.index("-i")
        argv = argv[:i] + input_args(path, demuxer, fast) + argv[i + 2:]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._procs.append(proc)
        assert proc.stderr is not None
        self._errs.append(_Stderr(proc.stderr))
        return proc

    def _expire(self) -> None:
        self.timed_out = True
        self.close()

    @property
    def decoded_ms(self) -> float:
        """How far both streams have been decoded; a stream that has ended does not hold the other back."""
        streams = []  # (position in ms, ended) of each stream the chunk has
        if self.info.video is not None:
            streams.append((self.frames_read * 1000.0 / self.fps, self.video_done))
        if self.info.audio is not None:
            streams.append((self.samples_read * 1000.0 / AUDIO_RATE, self.audio_done))
        live = [ms for ms, ended in streams if not ended]
        return min(live) if live else max((ms for ms, _ in streams), default=0.0)

    @property
    def video_ms(self) -> float:
        """Video decoded so far (all of it once the stream has ended)."""
        return self.frames_read * 1000.0 / self.fps if self.info.video is not None else 0.0

    @property
    def audio_ms(self) -> float:
        return self.samples_read * 1000.0 / AUDIO_RATE if self.info.audio is not None else 0.0

    @property
    def finished(self) -> bool:
        return self.video_done and self.audio_done

    def read(self, seconds: float) -> Window:
        """The next `seconds` of each stream that has not ended (fewer at the end)."""
        first_frame, first_sample = self.frames_read, self.samples_read
        frames = np.zeros((0, 2, 2, 3), np.uint8)
        audio = np.zeros((self.channels, 0), np.float32)
        if self.video is not None and not self.video_done and self.size is not None:
            w, h = self.size
            want = max(1, int(round(seconds * self.fps)))
            raw = _read_exact(self.video, want * w * h * 3)
            n = len(raw) // (w * h * 3)
            frames = np.frombuffer(raw[: n * w * h * 3], np.uint8).reshape(n, h, w, 3)
            self.frames_read += n
            self.video_done = n < want
        if self.audio is not None and not self.audio_done:
            want = int(seconds * AUDIO_RATE)
            raw = _read_exact(self.audio, want * self.channels * 4)
            n = len(raw) // (self.channels * 4)
            audio = np.frombuffer(raw[: n * self.channels * 4], np.float32).reshape(n, self.channels).T.copy()
            self.samples_read += n
            self.audio_done = n < want
        if self.finished:
            self._check_end()
        return Window(first_frame, frames, first_sample, audio)

    def _check_end(self) -> None:
        codes = [p.wait() for p in self._procs]
        for err in self._errs:
            err.join(timeout=2)
        if self.timed_out:
            raise BadChunk("decode_timeout", f"decoding took longer than its {self.timeout_s:.0f}s budget")
        lines = [line for err in self._errs for line in err.lines]
        if any(err.partial for err in self._errs):
            raise BadChunk("truncated", next((x for x in lines if "partial file" in x), "partial file"))
        if any(codes):
            raise BadChunk("undecodable", (lines[-1] if lines else f"ffmpeg exited {max(codes)}")[:300])
        if self.frames_read == 0 and self.samples_read == 0:
            raise BadChunk("undecodable", "no frames and no audio decoded")
        if self._whole and is_truncated(self.info.duration_ms, self.decoded_ms):
            raise BadChunk("truncated", f"decoded {self.decoded_ms:.0f} ms of the {self.info.duration_ms} ms "
                                        "the container declares")

    def close(self) -> None:
        self._timer.cancel()
        for p in self._procs:
            if p.poll() is None:
                p.kill()
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if p.stdout:
                p.stdout.close()

    def __enter__(self) -> StreamDecoder:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _read_exact(proc: subprocess.Popen[bytes], n: int) -> bytes:
    """Up to n bytes; fewer only at the end of the stream (or when the process was killed)."""
    assert proc.stdout is not None
    parts, got = [], 0
    while got < n:
        part = proc.stdout.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


@dataclass
class Decoded:
    info: MediaInfo
    frames: np.ndarray       # (N, H, W, 3) uint8, sampled at `fps`; N may be 0
    fps: float
    audio: np.ndarray        # (C, S) float32 at 16 kHz; C may be 0
    duration_ms: int


def decode(ffmpeg_bin: str, path: Path, fps: float, frame_width: int, timeout: float = 120.0,
           fast: bool = True) -> Decoded:
    """Whole-file decode for short media (benchmarks, tools); the worker streams with StreamDecoder."""
    with StreamDecoder(ffmpeg_bin, path, fps, frame_width, timeout, fast) as dec:
        windows = []
        while not dec.finished:
            windows.append(dec.read(60.0))
        frames = [w.frames for w in windows if len(w.frames)]
        audio = [w.audio for w in windows if w.audio.size]
        decoded_ms = dec.decoded_ms
        return Decoded(dec.info, np.concatenate(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8), fps,
                       np.concatenate(audio, axis=1) if audio else np.zeros((0, 0), np.float32),
                       dec.info.duration_ms or int(round(decoded_ms)))


def scratch_dir() -> str | None:
    """Prefer RAM-backed /dev/shm for short-lived media files."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class ChunkFile:
    """The payload on scratch storage for ffmpeg to read (a file, so demuxers can seek), removed on exit."""

    def __init__(self, payload: bytes) -> None:
        fd, name = tempfile.mkstemp(prefix="callstream-chunk-", dir=scratch_dir())
        self.path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
