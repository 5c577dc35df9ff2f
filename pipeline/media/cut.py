"""Cut a recording into self-contained chunks, the way a recorder would publish them.

Stream copy into Matroska (which accepts nearly every codec) cuts at keyframes without re-encoding;
only when copying fails do we re-encode, forcing keyframes on the chunk grid.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg


@dataclass(frozen=True)
class ChunkFile:
    path: Path
    seq: int
    start_ms: int
    end_ms: int


def _segment_argv(ffmpeg_bin: str, src: Path, outdir: Path, seconds: float, copy: bool) -> list[str]:
    codec = {"c": "copy"} if copy else {
        "c:v": "libx264", "preset": "veryfast", "c:a": "aac",
        "force_key_frames": f"expr:gte(t,n_forced*{seconds})"}
    # avoid_negative_ts disabled: the list's times stay the source's own. Otherwise the muxer shifts
    # everything by the audio encoder's priming (AAC: 21 ms), and every chunk lands 21 ms late in call
    # time, ending the timeline in a 21-ms sliver row.
    out = ffmpeg.input(str(src)).output(
        str(outdir / "chunk%06d.mkv"), f="segment", segment_time=seconds, segment_format="matroska",
        reset_timestamps=1, segment_list=str(outdir / "list.csv"), segment_list_type="csv",
        avoid_negative_ts="disabled", **codec)
    argv = out.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(cmd=ffmpeg_bin)
    # Keep the first video and first audio stream only (optional maps: either may be absent).
    i = argv.index("-i") + 2
    return argv[:i] + ["-map", "0:v:0?", "-map", "0:a:0?", "-dn", "-sn"] + argv[i:]


class NotMedia(ValueError):
    """The file is not a recording ffmpeg can read (a text file, an image, a broken download)."""


def cut(ffmpeg_bin: str, src: Path, seconds: float, workdir: Path | None = None) -> list[ChunkFile]:
    if not Path(src).is_file():
        raise FileNotFoundError(src)
    outdir = Path(workdir or tempfile.mkdtemp(prefix="callstream-cut-"))
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        return _cut(ffmpeg_bin, Path(src), seconds, outdir)
    except BaseException:
        if workdir is None:
            shutil.rmtree(outdir, ignore_errors=True)   # a file that is not media leaves nothing behind
        raise


def _cut(ffmpeg_bin: str, src: Path, seconds: float, outdir: Path) -> list[ChunkFile]:
    for copy in (True, False):
        for old in outdir.glob("chunk*.mkv"):
            old.unlink()
        proc = subprocess.run(_segment_argv(ffmpeg_bin, Path(src), outdir, seconds, copy), capture_output=True)
        if proc.returncode == 0:
            break
    else:
        said = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise NotMedia(f"{src} is not a recording ffmpeg can read ({(said or ['no output'])[-1][:200]})")
    with open(outdir / "list.csv", newline="") as f:
        rows = [(name, float(start), float(end)) for name, start, end in csv.reader(f)]
    (outdir / "list.csv").unlink()
    # Offsets are relative to the recording's first timestamp; a negative one is encoder priming, which
    # decodes to nothing.
    origin = max(rows[0][1], 0.0) if rows else 0.0
    return [ChunkFile(outdir / name, seq, max(0, int(round((start - origin) * 1000))),
                      int(round((end - origin) * 1000)))
            for seq, (name, start, end) in enumerate(rows)]
