"""ffmpeg argv for decoding a chunk: pure functions of the file, its container and the options.

Every process the decoder starts is built here: the input pinned to one demuxer and the `file`
protocol (nothing in a chunk can make ffmpeg open another file or a URL), the sampling and scaling
filters, and the AVI mux of both streams or a raw stream each once the streams are split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from pipeline.shared.wire import SAMPLE_RATE as AUDIO_RATE

LOG_ARGS = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info")
# aresample async: a gap in the stream's timestamps (a muted track, a recorder pause) becomes silence, so
# every sample stays at its own call time; raw PCM would close the gap and shift all later audio early.
# asetnsamples: quarter-second packets (the last one not padded), so the reader handles 4 per second, not 47.
AUDIO_FILTER = "aresample=async=1:first_pts=0,asetnsamples=n=4000:p=0"
# swscale's area filter averages the source pixels each output pixel covers: for a 2-3x downscale it is
# cheaper than the default bicubic at the same labels. "bicubic" stays for the benchmark's agreement check.
SCALERS = ("area", "bicubic", "bilinear")


@dataclass(frozen=True)
class DecodeOptions:
    """How chunks are decoded. The defaults are the worker's; the benchmark and the tests pass others
    (the path before an optimisation, a decoder forced to fail) instead of changing module globals."""
    scaler: str = "area"
    fast: bool = True   # ffmpeg's fast decoding flags (input_args)

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




def decoder_input(path: Path, demuxer: str, *, fast: bool) -> list[str]:
    """The input options of one decoding process: one thread (a worker runs several chunks at once),
    the input pinned to its demuxer and the file protocol."""
    return ["-threads", "1", *input_args(path, demuxer, fast)]


def video_filter(fps: float, frame_width: int, scaler: str, size: tuple[int, int] | None = None) -> str:
    """start_time=0: a video that starts after the audio (a camera switched on 2 s into the chunk)
    is padded to the chunk's start with its first picture. Without it, its sampled frames start at
    its own first frame: AVI's muxer then writes empty "no change" slots, and a per-stream split
    would put every frame early by the gap. `size`: a fixed output size (the split's, learnt from the
    first process), else the target width's."""
    if size is not None:
        return f"fps={fps}:start_time=0,scale={size[0]}:{size[1]}:flags={scaler}"
    return f"fps={fps}:start_time=0,{scale_filter(frame_width, scaler)}"


def _with_input(out: ffmpeg.nodes.OutputStream, ffmpeg_bin: str, input_opts: list[str]) -> list[str]:
    """The compiled command with the placeholder input replaced by the real, pinned input options."""
    argv: list[str] = out.global_args(*LOG_ARGS).compile(cmd=ffmpeg_bin)
    i = argv.index("-i")
    return argv[:i] + input_opts + argv[i + 2:]


def muxed_argv(ffmpeg_bin: str, input_opts: list[str], *, fps: float, frame_width: int, scaler: str,
               video: bool, audio: bool, channels: int | None) -> list[str]:
    """Both wanted streams to one AVI on stdout. The maps are optional: which streams exist is known
    from the report, which this same process prints first."""
    src = ffmpeg.input("x")  # placeholder input; the real, pinned input options are spliced in
    streams, opts = [], dict[str, str | int]()
    if video:
        streams.append(src["v:0?"])
        opts.update({"filter:v": video_filter(fps, frame_width, scaler), "pix_fmt": "rgb24", "c:v": "rawvideo"})
    if audio:
        streams.append(src["a:0?"])
        opts.update({"filter:a": AUDIO_FILTER, "ar": AUDIO_RATE, "c:a": "pcm_f32le"})
        if channels:
            opts["ac"] = channels
    return _with_input(ffmpeg.output(*streams, "pipe:1", format="avi", **opts), ffmpeg_bin, input_opts)


def video_argv(ffmpeg_bin: str, input_opts: list[str], fps: float, size: tuple[int, int], scaler: str) -> list[str]:
    """The video stream alone, raw RGB on stdout (after a split)."""
    out = ffmpeg.input("x")["v:0"].output("pipe:", **{"filter:v": video_filter(fps, 0, scaler, size)},
                                          format="rawvideo", pix_fmt="rgb24")
    return _with_input(out, ffmpeg_bin, input_opts)


def audio_argv(ffmpeg_bin: str, input_opts: list[str], channels: int) -> list[str]:
    """The audio stream alone, float PCM at 16 kHz on stdout (after a split)."""
    out = ffmpeg.input("x")["a:0"].output("pipe:", **{"filter:a": AUDIO_FILTER}, format="f32le",
                                          acodec="pcm_f32le", ac=channels, ar=AUDIO_RATE)
    return _with_input(out, ffmpeg_bin, input_opts)
