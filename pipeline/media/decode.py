"""Decode a chunk into sampled RGB frames and 16 kHz float PCM, a window at a time.

Every byte of a chunk is untrusted, so ffmpeg only ever reads the chunk itself: the container is
recognised from its first bytes, ffmpeg is told that one demuxer (`-f`, `-format_whitelist`) and the
`file` protocol only, so playlists, concat scripts and references to other files or URLs never open.
One ffmpeg process per chunk reports the streams and writes both of them, read `window` seconds at a
time, so memory does not grow with a chunk's length or resolution; a watchdog kills ffmpeg when the
chunk's decode budget (scaled by its declared duration) runs out. The decoder does the sampling and
scaling (fps and scale filters), so only the frames the model needs ever cross a pipe; in Matroska it
does not even decode the frames no sample shows (pipeline/media/gop.py). Commands are argument lists:
nothing from a message reaches a shell.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

import ffmpeg
import numpy as np

from pipeline.errors import BadChunk
from pipeline.media import avi, gop, mkv
from pipeline.media.holders import held
from pipeline.media.probe import MediaInfo, parse_report, require_streams
from pipeline.media.runclock import CLOCK, Deadline

_T = TypeVar("_T")

AUDIO_RATE = 16_000
MAX_CHANNELS = 8          # an audio-channels map names at most 8; more are never analysed
SNIFF_BYTES = 4096
HEADER_TIMEOUT_S = 30.0   # to read the container's header, before the chunk's own budget is known
LOOKAHEAD_S = 20.0        # how far one stream may run past the window before the streams are split
REPORT_BYTES = 200_000    # of ffmpeg's stream report kept for parsing
LOG_ARGS = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info")
# aresample async: a gap in the stream's timestamps (a muted track, a recorder pause) becomes silence, so
# every sample stays at its own call time; raw PCM would close the gap and shift all later audio early.
# asetnsamples: quarter-second packets (the last one not padded), so the reader handles 4 per second, not 47.
AUDIO_FILTER = "aresample=async=1:first_pts=0,asetnsamples=n=4000:p=0"
# Matroska/WebM declare every codec parameter the report and the decoders need in their track headers,
# so ffmpeg's stream-info pass (which decodes the first 7 H.264 frames only to guess a reorder delay,
# then throws them away) is skipped: 9 % of a 720p chunk's decode CPU, same output (docs/BENCHMARKS.md).
# MP4/MOV keep it: without it their duration is not computed. So does a Matroska file whose timestamps
# do not start at zero (a recorder's running call time): only the pass tells ffmpeg its start time.
# A Matroska file whose decoders cannot start without the pass is started once more with it.
SKIP_PROBE = ("-nofind_stream_info",)
# swscale's area filter averages the source pixels each output pixel covers. For the 2-3x downscale to
# the frame width it costs 5-9 % less of a chunk's decode CPU than the default bicubic (16 ms of 205 at
# 720p, 5 of 100 at 360p) and gives the same labels (docs/BENCHMARKS.md). "bicubic" is the path
# before it, kept for the benchmark's agreement check.
SCALERS = ("area", "bicubic", "bilinear")


@dataclass(frozen=True)
class DecodeOptions:
    """How chunks are decoded. The defaults are the worker's; the benchmark and the tests pass others
    (the path before an optimisation, a decoder forced to fail) instead of changing module globals."""
    scaler: str = "area"
    # Packets no sampled frame needs (the end of each group of pictures) are dropped before the decoder:
    # the same frames, byte for byte, for a fifth less H.264 decoding at 1-s key frames (media/gop.py).
    drop_unsampled: bool = True
    skip_probe: tuple[str, ...] = SKIP_PROBE   # the input options that skip the stream-info pass
    fast: bool = True                           # ffmpeg's fast decoding flags (input_args)

    def __post_init__(self) -> None:
        if self.scaler not in SCALERS:
            raise ValueError(f"scaler {self.scaler!r} is not one of {SCALERS}")


DEFAULT_OPTIONS = DecodeOptions()


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
    too, so a frame's bytes never depend on the sender's resolution. The same arithmetic as
    `scale_filter` (rounding half up, as ffmpeg's expressions do), so ffmpeg agrees to the pixel."""
    scale = min(1.0, min(target_width / max(width, 1), target_width / max(height, 1)))
    w = 2 * math.floor(math.floor(width * scale + 0.5) / 2)
    h = 2 * math.floor(height * scale / 2 + 0.5)
    return max(w, 2), max(h, 2)


def scale_filter(target_width: int, scaler: str = DEFAULT_OPTIONS.scaler) -> str:
    """`target_size` as an ffmpeg scale filter, for a decoder that learns the input size as it starts."""
    s = f"min(1,min({target_width}/iw,{target_width}/ih))"
    return f"scale=w='max(2,2*floor(floor(iw*{s}+0.5)/2))':h='max(2,2*floor(ih*{s}/2+0.5))':flags={scaler}"


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
    """Drains a process's stderr so it can never block on a full pipe.

    ffmpeg runs at `-loglevel level+info`: the input's stream report (everything before "Stream
    mapping:") is kept whole, bounded, for `parse_report`, and `reported` is set when it is complete (or
    the process has ended); after it, only the last lines are kept, and lines ffmpeg tagged as errors
    are told apart from its progress chatter."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.report: list[str] = []
        self.reported = threading.Event()
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self.errors: collections.deque[str] = collections.deque(maxlen=5)
        self.partial = False
        self.start()

    def run(self) -> None:
        size = 0
        try:
            for raw in iter(self.pipe.readline, b""):
                text = raw.decode(errors="replace").rstrip()
                plain = _untag(text)
                if not self.reported.is_set():
                    if plain.startswith("Stream mapping:"):
                        self.reported.set()
                    elif size < REPORT_BYTES:
                        size += len(plain) + 1
                        self.report.append(plain)
                line = plain.strip()[:300]
                self.partial = self.partial or "partial file" in line
                if line:
                    self.lines.append(line)
                    if any(tag in text for tag in ("[error]", "[fatal]", "[panic]")):
                        self.errors.append(line)
        finally:
            self.reported.set()

    @property
    def message(self) -> str | None:
        """What ffmpeg said went wrong: its last error line, else its last line."""
        return self.errors[-1] if self.errors else (self.lines[-1] if self.lines else None)


_TAG = re.compile(r"\[(?:quiet|panic|fatal|error|warning|info|verbose|debug|trace)\] ")


def _untag(line: str) -> str:
    """A line without ffmpeg's `[level] ` tag (which follows the `[component @ 0x..] ` prefix, if any)."""
    return _TAG.sub("", line, count=1)


class StreamDecoder:
    """One chunk's sampled frames and 16 kHz PCM, read a window at a time.

    One ffmpeg process per chunk: it reports the container's streams on stderr before it writes
    anything (no separate probe), demuxes the file once and writes both streams to one pipe as AVI,
    interleaved by its muxer (pipeline/media/avi.py), so a reader never blocks on one pipe while the
    other fills. A process start costs ~12 ms of CPU here and the separate probe, video and audio
    processes this replaces cost about a third more per chunk (docs/BENCHMARKS.md).

    Reading one interleaved pipe means one stream's data waits in memory while the other is read. That
    is bounded: when one stream runs more than LOOKAHEAD_S past the window asked for (a camera switched
    off early in a long chunk, a file whose streams are stored far apart), the rest of the chunk is
    decoded by two processes, one per stream, each read at its own pace as before, skipping what was
    already returned.

    Not thread-safe; one reader thread at a time, `close()` from any thread (it kills the processes,
    which ends a blocked read at once: that is how cancellation and the deadline stop a decode)."""

    def __init__(self, ffmpeg_bin: str, path: Path, fps: float, frame_width: int,
                 timeout_s: float | Callable[[MediaInfo], float], options: DecodeOptions = DEFAULT_OPTIONS,
                 video: bool = True, audio: bool = True) -> None:
        """`timeout_s` may be a function of what the container declares (a budget that scales).
        `video`/`audio` False: that stream is nobody's (an audio-only chunk of a participant whose
        recorder muxed a picture in, say) and is never decoded."""
        with open(path, "rb") as f:
            demuxer = sniff_container(f.read(SNIFF_BYTES))
        if demuxer is None:
            raise BadChunk("undecodable", "not a media container callstream reads "
                                          "(MP4/MOV, Matroska/WebM, MPEG-TS, Ogg, WAV, FLAC)")
        self.ffmpeg_bin, self.path, self.demuxer, self.options = ffmpeg_bin, path, demuxer, options
        self.fast, self.scaler = options.fast, options.scaler
        self.fps, self.frame_width = fps, frame_width
        self.timed_out = False
        self._closed = False
        self._procs: list[subprocess.Popen[bytes]] = []
        self._errs: list[_Stderr] = []
        self._timer: Deadline | None = None
        self.size: tuple[int, int] | None = None
        self.channels = 0
        self.frames_read = self.samples_read = 0
        self._header = avi.Header()
        self._frames: collections.deque[bytes] = collections.deque()  # read from the pipe, not yet returned
        self._last_frame = b""
        self._samples = bytearray()
        self._eof = False
        self.video: subprocess.Popen[bytes] | None = None  # the per-stream processes, once split
        self.audio: subprocess.Popen[bytes] | None = None
        self._split = False
        self._skip_probe, self._drop = self._plan(video)
        started = CLOCK.running()
        self._arm(HEADER_TIMEOUT_S)
        try:
            mux = self._spawn(self._muxed_args(video, audio, None))
            info = self._stream_report(self._errs[-1])
            if (video and info.video is None or not video) and (audio and info.audio is None or not audio):
                wanted = " and ".join(k for k, w in (("video", video), ("audio", audio)) if w)
                raise BadChunk("no_media_streams", f"the chunk's media header asks for {wanted}, which it lacks")
            self.info: MediaInfo = dataclasses.replace(info, video=info.video if video else None,
                                                       audio=info.audio if audio else None)
            # The container's length may be that of a stream left undecoded: then it proves no truncation.
            self._whole = self.info == info
            self.timeout_s = timeout_s(self.info) if callable(timeout_s) else timeout_s
            self._arm(max(0.0, self.timeout_s - (CLOCK.running() - started)))
            self._mux = mux
            self._header = self._first_header(video, audio)
            if self._header.channels > MAX_CHANNELS:
                # A rare file (or a decoder that finds more channels than the container declares): decode
                # again with the channels bounded, so a window's audio never scales with the sender's count.
                self._header = self._restart(video, audio, MAX_CHANNELS)
            if self._header.video is not None:
                self.size = (self._header.width, self._header.height)
            self.channels = min(self._header.channels, MAX_CHANNELS)
        except BaseException:
            self.close()  # no ffmpeg outlives a failed start
            raise
        self.video_done = self._header.video is None
        self.audio_done = self._header.audio is None

    def _plan(self, video: bool) -> tuple[bool, str | None]:
        """Whether ffmpeg may skip its stream-info pass, and the packets it may skip decoding. Both only
        for a Matroska chunk whose timestamps start at zero: without the pass ffmpeg never learns the
        start time, so a chunk stamped from 10 s into the call would be padded from zero (and the
        dropped packets are planned on the timeline the pass would give)."""
        if self.demuxer != "matroska":
            return False, None
        index = mkv.read_index(self.path)
        if index is None or index.start != 0:
            return False, None
        if not video or not self.options.drop_unsampled or index.video is None:
            return True, None
        return True, gop.drop_filter(index.video, self.fps, index.tick_ns)

    def _first_header(self, video: bool, audio: bool) -> avi.Header:
        try:
            return self._guard(lambda: avi.read_header(self._read_mux))
        except BadChunk:
            if not self._skip_probe or self.timed_out:
                raise
            # Decoders that could not start from the track headers alone: once more with the pass.
            self._skip_probe = False
            return self._restart(video, audio, None)

    def _restart(self, video: bool, audio: bool, channels: int | None) -> avi.Header:
        """Replace the one process (whichever is current) with a new one; its output's header."""
        self._kill(self._mux)
        self._mux = self._spawn(self._muxed_args(video, audio, channels))
        return self._guard(lambda: avi.read_header(self._read_mux))

    # -- processes ---------------------------------------------------------------------------------

    def _input_args(self, fast: bool) -> list[str]:
        skip = list(self.options.skip_probe) if self._skip_probe else []
        drop = ["-bsf:v", self._drop] if self._skip_probe and self._drop else []
        return [*skip, *drop, "-threads", "1", *input_args(self.path, self.demuxer, fast)]

    def _video_filter(self, size: tuple[int, int] | None) -> str:
        """start_time=0: a video that starts after the audio (a camera switched on 2 s into the chunk)
        is padded to the chunk's start with its first picture. Without it, its sampled frames start at
        its own first frame: AVI's muxer then writes empty "no change" slots, and a per-stream split
        would put every frame early by the gap."""
        if size is not None:
            return f"fps={self.fps}:start_time=0,scale={size[0]}:{size[1]}:flags={self.scaler}"
        return f"fps={self.fps}:start_time=0,{scale_filter(self.frame_width, self.scaler)}"

    def _muxed_args(self, video: bool, audio: bool, channels: int | None) -> list[str]:
        """Both wanted streams to one AVI on stdout. The maps are optional: which streams exist is
        known from the report, which this same process prints first."""
        src = ffmpeg.input("x")  # placeholder input; the real, pinned input options are spliced in
        streams, opts = [], dict[str, str | int]()
        if video:
            streams.append(src["v:0?"])
            opts.update({"filter:v": self._video_filter(None), "pix_fmt": "rgb24", "c:v": "rawvideo"})
        if audio:
            streams.append(src["a:0?"])
            opts.update({"filter:a": AUDIO_FILTER, "ar": AUDIO_RATE, "c:a": "pcm_f32le"})
            if channels:
                opts["ac"] = channels
        out = ffmpeg.output(*streams, "pipe:1", format="avi", **opts)
        return self._argv(out.global_args(*LOG_ARGS).compile(cmd=self.ffmpeg_bin), self.fast)

    def _argv(self, argv: list[str], fast: bool) -> list[str]:
        i = argv.index("-i")
        return argv[:i] + self._input_args(fast) + argv[i + 2:]

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._procs.append(proc)
        assert proc.stderr is not None
        self._errs.append(_Stderr(proc.stderr))
        if self._closed:  # close() raced this start: nothing may outlive it
            self._kill(proc)
        return proc

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process that is no longer needed; its exit status and lines no longer count."""
        i = self._procs.index(proc)
        self._procs.pop(i)
        self._errs.pop(i)
        _stop(proc)

    def _stream_report(self, err: _Stderr) -> MediaInfo:
        """What the container holds, from the report ffmpeg prints before it decodes anything."""
        # Waited in steps, and ended by the deadline (running time), not by a wall-clock wait: a process
        # stopped for longer than the budget must not wake up to a verdict on its chunk.
        while not err.reported.wait(0.25) and not self.timed_out:
            pass
        if self.timed_out:
            raise BadChunk("decode_timeout", f"reading the container header took longer than {HEADER_TIMEOUT_S:.0f}s")
        text = "\n".join(err.report)
        if "Input #0" not in text:
            err.join(timeout=2)
            raise BadChunk("undecodable", (err.message or "no report")[:300])
        return require_streams(parse_report(text))

    def _arm(self, seconds: float) -> None:
        """The budget counts the time this process runs (media/runclock.py), never a pause."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = CLOCK.call_after(seconds, self._expire)

    def _expire(self) -> None:
        self.timed_out = True
        self.close()

    def _read_mux(self, n: int) -> bytes:
        return _read_exact(self._mux, n)

    def _guard(self, step: Callable[[], _T]) -> _T:
        """Run a parsing step; when the output stops making sense, ffmpeg's own reason comes first."""
        try:
            return step()
        except BadChunk:
            self._check_exit(wait_s=1.0)
            raise

    # -- positions ---------------------------------------------------------------------------------

    @property
    def decoded_ms(self) -> float:
        """How far both streams have been decoded; a stream that has ended does not hold the other back."""
        streams = []  # (position in ms, ended) of each stream the chunk has
        if self.size is not None:
            streams.append((self.frames_read * 1000.0 / self.fps, self.video_done))
        if self.channels:
            streams.append((self.samples_read * 1000.0 / AUDIO_RATE, self.audio_done))
        live = [ms for ms, ended in streams if not ended]
        return min(live) if live else max((ms for ms, _ in streams), default=0.0)

    @property
    def video_ms(self) -> float:
        """Video decoded so far (all of it once the stream has ended)."""
        return self.frames_read * 1000.0 / self.fps if self.size is not None else 0.0

    @property
    def audio_ms(self) -> float:
        return self.samples_read * 1000.0 / AUDIO_RATE if self.channels else 0.0

    @property
    def finished(self) -> bool:
        return self.video_done and self.audio_done

    # -- reading -----------------------------------------------------------------------------------

    def read(self, seconds: float) -> Window:
        """The next `seconds` of each stream that has not ended (fewer at the end)."""
        want_f = max(1, int(round(seconds * self.fps))) if not self.video_done else 0
        want_s = int(seconds * AUDIO_RATE) if not self.audio_done else 0
        if not self._split:
            self._fill(want_f, want_s)
        if self._split:
            packed = self._header.packed_frame_bytes
            frames_raw = _read_exact(self.video, want_f * packed) if want_f and self.video else b""
            audio_raw = (_read_exact(self.audio, want_s * self._header.channels * 4)
                         if want_s and self.audio else b"")
        else:
            frames_raw = b"".join(self._frames.popleft() for _ in range(min(want_f, len(self._frames))))
            k = min(want_s * self._header.channels * 4, len(self._samples))
            audio_raw = bytes(self._samples[:k])
            del self._samples[:k]
        window = self._window(frames_raw, audio_raw)
        n_frames, n_samples = len(window.frames), window.audio.shape[1]
        if self._split:
            self.video_done = self.video_done or n_frames < want_f
            self.audio_done = self.audio_done or n_samples < want_s
        else:
            self.video_done = self.video_done or (self._eof and not self._frames)
            self.audio_done = self.audio_done or (self._eof and not self._samples)
        if self.finished:
            self._check_end()
        return window

    def _fill(self, want_f: int, want_s: int) -> None:
        """Read the pipe until each stream that has not ended holds its window, or the pipe ends; split
        into per-stream processes when one stream runs too far ahead of the other."""
        h = self._header
        ahead_f = want_f + int(LOOKAHEAD_S * self.fps)
        ahead_s = want_s + int(LOOKAHEAD_S * AUDIO_RATE)
        while not self._eof:
            frames, samples = len(self._frames), self._pending_samples
            if (h.video is None or frames >= want_f) and (h.audio is None or samples >= want_s):
                return
            if frames > ahead_f or samples > ahead_s:
                self._split_streams()
                return
            packet = self._guard(lambda: avi.read_packet(self._read_mux, h))
            if packet is None:
                if self._ended_early():
                    self._split_streams()
                    return
                self._eof = True
            elif packet[0] == "video":
                # An empty frame is AVI's "no change": the previous picture again (black if none yet).
                frame = packet[1] or self._last_frame or bytes(h.frame_bytes)
                self._frames.append(frame)
                self._last_frame = frame
            else:
                self._samples += packet[1]

    @property
    def _pending_samples(self) -> int:
        """Samples read from the pipe and not yet returned."""
        return len(self._samples) // (4 * self._header.channels) if self._header.channels else 0

    def _ended_early(self) -> bool:
        """The one process failed, or stopped well before the length the container declares: a damaged
        file whose demuxer gave up on one stream's data. Read on its own, the other stream may still be
        whole (as it is when each stream has its own process), so that is tried before judging it."""
        if self.timed_out:
            return False
        try:
            code = self._mux.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return False
        h = self._header
        frames = self.frames_read + len(self._frames)
        samples = self.samples_read + self._pending_samples
        reached = max(frames * 1000.0 / self.fps if h.video is not None else 0.0,
                      samples * 1000.0 / AUDIO_RATE if h.audio is not None else 0.0)
        return code != 0 or (self._whole and is_truncated(self.info.duration_ms, reached))

    def _split_streams(self) -> None:
        """Decode the rest with one process per stream, skipping what has been returned already."""
        h = self._header
        self._kill(self._mux)
        self._frames.clear()
        self._samples = bytearray()
        self._split = True
        src = ffmpeg.input("x")
        if h.video is not None and not self.video_done:
            assert self.size is not None
            out = (src["v:0"].output("pipe:", **{"filter:v": self._video_filter(self.size)}, format="rawvideo",
                                     pix_fmt="rgb24"))
            self.video = self._spawn(self._argv(out.global_args(*LOG_ARGS).compile(cmd=self.ffmpeg_bin), self.fast))
            _discard(self.video, self.frames_read * h.packed_frame_bytes)
        if h.audio is not None and not self.audio_done:
            out = src["a:0"].output("pipe:", **{"filter:a": AUDIO_FILTER}, format="f32le", acodec="pcm_f32le",
                                    ac=h.channels, ar=AUDIO_RATE)
            self.audio = self._spawn(self._argv(out.global_args(*LOG_ARGS).compile(cmd=self.ffmpeg_bin), False))
            _discard(self.audio, self.samples_read * h.channels * 4)

    def _window(self, frames_raw: bytes, audio_raw: bytes) -> Window:
        h = self._header
        first_frame, first_sample = self.frames_read, self.samples_read
        frames = np.zeros((0, 2, 2, 3), np.uint8)
        audio = np.zeros((self.channels, 0), np.float32)
        if self.size is not None and frames_raw:
            row = h.width * 3 if self._split else h.row_bytes  # the split process writes packed rows
            n = len(frames_raw) // (row * h.height)
            rows = np.frombuffer(frames_raw[: n * row * h.height], np.uint8).reshape(n, h.height, row)
            frames = (rows if row == h.width * 3 else rows[:, :, : h.width * 3]).reshape(n, h.height, h.width, 3)
            self.frames_read += n
        if self.channels and audio_raw:
            n = len(audio_raw) // (h.channels * 4)
            pcm = np.frombuffer(audio_raw[: n * h.channels * 4], np.float32).reshape(n, h.channels)
            audio = pcm[:, : self.channels].T.copy()
            self.samples_read += n
        return Window(first_frame, frames, first_sample, audio)

    # -- the end -----------------------------------------------------------------------------------

    def _check_exit(self, wait_s: float = 5.0) -> None:
        """ffmpeg's own verdict, when it has one: a timeout, a cut-off file, a failed decode."""
        codes: list[int | None] = []
        for p in self._procs:
            try:
                codes.append(p.wait(timeout=wait_s))
            except subprocess.TimeoutExpired:
                codes.append(None)
        for err in self._errs:
            err.join(timeout=2)
        if self.timed_out:
            raise BadChunk("decode_timeout", f"decoding took longer than its {self.timeout_s:.0f}s budget")
        if any(err.partial for err in self._errs):
            lines = [line for err in self._errs for line in err.lines]
            raise BadChunk("truncated", next((x for x in lines if "partial file" in x), "partial file"))
        failed = [(c, e) for c, e in zip(codes, self._errs, strict=True) if c]
        if failed:
            code, err = failed[0]
            raise BadChunk("undecodable", (err.message or f"ffmpeg exited {code}")[:300])

    def _check_end(self) -> None:
        self._check_exit()
        if self.frames_read == 0 and self.samples_read == 0:
            raise BadChunk("undecodable", "no frames and no audio decoded")
        if self._whole and is_truncated(self.info.duration_ms, self.decoded_ms):
            raise BadChunk("truncated", f"decoded {self.decoded_ms:.0f} ms of the {self.info.duration_ms} ms "
                                        "the container declares")

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for p in list(self._procs):
            _stop(p)

    def __enter__(self) -> StreamDecoder:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc.stdout:
        proc.stdout.close()


def _discard(proc: subprocess.Popen[bytes], n: int) -> None:
    """Read and drop n bytes (what an earlier process already returned), a megabyte at a time."""
    while n > 0:
        part = _read_exact(proc, min(n, 1 << 20))
        if not part:
            return
        n -= len(part)


def _read_exact(proc: subprocess.Popen[bytes], n: int) -> bytes:
    """Up to n bytes; fewer only at the end of the stream (or when the process was killed, or its pipe
    closed by `close()` between two reads: the deadline's verdict then comes from `_check_end`)."""
    assert proc.stdout is not None
    parts, got = [], 0
    while got < n:
        try:
            part = proc.stdout.read(n - got)
        except ValueError:  # read of closed file
            break
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
           options: DecodeOptions = DEFAULT_OPTIONS) -> Decoded:
    """Whole-file decode for short media (benchmarks, tools); the worker streams with StreamDecoder."""
    with StreamDecoder(ffmpeg_bin, path, fps, frame_width, timeout, options) as dec:
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


CHUNK_PREFIX = "callstream-chunk-"
# Our files are named for the process that wrote them, so a later process can tell whose they were.
CHUNK_FILE = re.compile(rf"^{CHUNK_PREFIX}(\d+)-")


class ChunkFile:
    """The payload on scratch storage for ffmpeg to read (a file, so demuxers can seek), removed on exit."""

    def __init__(self, payload: bytes) -> None:
        fd, name = tempfile.mkstemp(prefix=f"{CHUNK_PREFIX}{os.getpid()}-", dir=scratch_dir())
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def remove_stale_chunk_files(folder: str | Path | None = None) -> list[Path]:
    """Chunk files a crashed worker left in scratch storage (customer media outliving its processing):
    removed at a worker's start. Only our naming, only files whose writing process is gone, and only
    files no live process holds open; returns what was removed."""
    root = Path(folder or scratch_dir() or tempfile.gettempdir())
    candidates = {}
    for path in root.glob(f"{CHUNK_PREFIX}*"):
        m = CHUNK_FILE.match(path.name)
        if m and path.is_file() and not _alive(int(m.group(1))):
            candidates[str(path)] = path
    in_use = held(set(candidates))
    removed = []
    for name, path in candidates.items():
        if name not in in_use:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
