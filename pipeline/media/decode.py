"""Decode a chunk into sampled RGB frames and 16 kHz float PCM, a window at a time.

Every byte of a chunk is untrusted, so ffmpeg only ever reads the chunk itself: the container is
recognised from its first bytes, ffmpeg is told that one demuxer (`-f`, `-format_whitelist`) and the
`file` protocol only, so playlists, concat scripts and references to other files or URLs never open.
One ffmpeg process per chunk reports the streams and writes both of them, read `window` seconds at a
time, so memory does not grow with a chunk's length or resolution; a watchdog kills ffmpeg when the
chunk's decode budget (scaled by its declared duration) runs out. The decoder does the sampling and
scaling (fps and scale filters), so only the frames the model needs ever cross a pipe. Commands are
argument lists: nothing from a message reaches a shell.

The parts: the argv of every process is built by pure functions (media/ffargs.py), ffmpeg's pipes are
read by media/pipes.py, the payload's scratch file is media/chunkfile.py; this module runs the
processes and turns their output into windows.
"""

from __future__ import annotations

import collections
import dataclasses
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import numpy as np

from pipeline.errors import BadChunk
from pipeline.media import avi
from pipeline.media.ffargs import (
    AUDIO_RATE,
    DEFAULT_OPTIONS,
    DecodeOptions,
    audio_argv,
    decoder_input,
    muxed_argv,
    sniff_container,
    video_argv,
)
from pipeline.media.pipes import Stderr, discard, read_exact, stop
from pipeline.media.probe import MediaInfo, parse_report, require_streams
from pipeline.media.runclock import CLOCK, Deadline

_T = TypeVar("_T")

MAX_CHANNELS = 8          # an audio-channels map names at most 8; more are never analysed
SNIFF_BYTES = 4096
HEADER_TIMEOUT_S = 30.0   # to read the container's header, before the chunk's own budget is known
LOOKAHEAD_S = 20.0        # how far one stream may run past the window before the streams are split
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


class StreamDecoder:
    """One chunk's sampled frames and 16 kHz PCM, read a window at a time.

    One ffmpeg process per chunk: it reports the container's streams on stderr before it writes
    anything (no separate probe), demuxes the file once and writes both streams to one pipe as AVI,
    interleaved by its muxer (pipeline/media/avi.py), so a reader never blocks on one pipe while the
    other fills (one process, not a probe and a process per stream: starting processes costs CPU).

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
        self._errs: list[Stderr] = []
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

    def _first_header(self, video: bool, audio: bool) -> avi.Header:
        return self._guard(lambda: avi.read_header(self._read_mux))

    def _restart(self, video: bool, audio: bool, channels: int | None) -> avi.Header:
        """Replace the one process (whichever is current) with a new one; its output's header."""
        self._kill(self._mux)
        self._mux = self._spawn(self._muxed_args(video, audio, channels))
        return self._guard(lambda: avi.read_header(self._read_mux))

    # -- processes ---------------------------------------------------------------------------------

    def _input(self, fast: bool) -> list[str]:
        return decoder_input(self.path, self.demuxer, fast=fast)

    def _muxed_args(self, video: bool, audio: bool, channels: int | None) -> list[str]:
        return muxed_argv(self.ffmpeg_bin, self._input(self.fast), fps=self.fps, frame_width=self.frame_width,
                          scaler=self.scaler, video=video, audio=audio, channels=channels)

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._procs.append(proc)
        assert proc.stderr is not None
        self._errs.append(Stderr(proc.stderr))
        if self._closed:  # close() raced this start: nothing may outlive it
            self._kill(proc)
        return proc

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process that is no longer needed; its exit status and lines no longer count."""
        i = self._procs.index(proc)
        self._procs.pop(i)
        self._errs.pop(i)
        stop(proc)

    def _stream_report(self, err: Stderr) -> MediaInfo:
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
        return read_exact(self._mux, n)

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
            frames_raw = read_exact(self.video, want_f * packed) if want_f and self.video else b""
            audio_raw = (read_exact(self.audio, want_s * self._header.channels * 4)
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
        if h.video is not None and not self.video_done:
            assert self.size is not None
            self.video = self._spawn(video_argv(self.ffmpeg_bin, self._input(self.fast), self.fps, self.size,
                                                self.scaler))
            discard(self.video, self.frames_read * h.packed_frame_bytes)
        if h.audio is not None and not self.audio_done:
            self.audio = self._spawn(audio_argv(self.ffmpeg_bin, self._input(False), h.channels))
            discard(self.audio, self.samples_read * h.channels * 4)

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
            stop(p)

    def __enter__(self) -> StreamDecoder:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@dataclass
class Decoded:
    info: MediaInfo
    frames: np.ndarray       # (N, H, W, 3) uint8, sampled at `fps`; N may be 0
    fps: float
    audio: np.ndarray        # (C, S) float32 at 16 kHz; C may be 0
    duration_ms: int


def decode(ffmpeg_bin: str, path: Path, fps: float, frame_width: int, timeout: float = 120.0,
           options: DecodeOptions = DEFAULT_OPTIONS, want_video: bool = True, want_audio: bool = True) -> Decoded:
    """Whole-file decode for short media (benchmarks, tools); the worker streams with StreamDecoder."""
    with StreamDecoder(ffmpeg_bin, path, fps, frame_width, timeout, options, want_video, want_audio) as dec:
        windows = []
        while not dec.finished:
            windows.append(dec.read(60.0))
        frames = [w.frames for w in windows if len(w.frames)]
        audio = [w.audio for w in windows if w.audio.size]
        decoded_ms = dec.decoded_ms
        return Decoded(dec.info, np.concatenate(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8), fps,
                       np.concatenate(audio, axis=1) if audio else np.zeros((0, 0), np.float32),
                       dec.info.duration_ms or int(round(decoded_ms)))


