"""What the benchmark publishes: calls cut once into chunks, exactly as `callstream produce` cuts them,
from generated recordings or from the user's own (`bench --recording`).

A workload is a few call templates; a run publishes as many calls as it needs, cycling through them
(each call its own id), so a run can be sized by time whatever the recordings' lengths."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from callstream_lab.synth import generate_call, generate_moving_call
from pipeline.contract import ChunkMeta
from pipeline.ingest.producer import Upload, participant_uploads, recording_uploads
from pipeline.settings import Settings


@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    fps: int

    @classmethod
    def parse(cls, text: str) -> Shape:  # "640x360@24"
        try:
            size, fps = text.split("@")
            w, h = size.split("x")
            return cls(int(w), int(h), int(fps))
        except ValueError:
            raise ValueError(f"shape {text!r}: expected WIDTHxHEIGHT@FPS, e.g. 640x360@24") from None

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@{self.fps}"


@dataclass
class Template:
    """One call as produce publishes it: its chunk files (kept), their bytes, and the call's length."""
    name: str
    uploads: list[Upload]
    payloads: list[bytes]
    seconds: float
    source: Path | None = None     # the whole recording, for the peers (a single-file call only)

    def ordered(self) -> list[tuple[Upload, bytes]]:
        """The chunks in the order produce publishes them: by when their last moment is recorded."""
        return sorted(zip(self.uploads, self.payloads, strict=True),
                      key=lambda x: (x[0].end_ms, x[0].participant_id or "", x[0].media, x[0].seq))

    def metas(self, call_id: str, loop: int = 0, last: bool = True) -> list[tuple[ChunkMeta, bytes, float]]:
        """(meta, payload, when its last moment is recorded, s) in publication order; `loop` > 0 is the
        call continuing: seqs and call time move on by whole templates (a live call longer than the
        recording)."""
        per_stream = max((u.seq for u in self.uploads), default=0) + 1
        shift_ms = int(round(loop * self.seconds * 1000))
        out = []
        for up, payload in self.ordered():
            meta = up.meta(call_id)
            meta = dataclasses.replace(meta, seq=meta.seq + loop * per_stream, start_ms=meta.start_ms + shift_ms,
                                       end_of_call=meta.end_of_call and last, call_started_at=None)
            out.append((meta, payload, (up.end_ms + shift_ms) / 1000))
        return out


@dataclass
class Workload:
    label: str
    templates: list[Template]
    chunk_seconds: float
    name: str = "recordings"    # short, for file names (the dashboard's)

    @property
    def recordings(self) -> list[Path]:
        return [u.path for t in self.templates for u in t.uploads]

    def call(self, i: int) -> Template:
        return self.templates[i % len(self.templates)]

    @property
    def mean_call_seconds(self) -> float:
        return sum(t.seconds for t in self.templates) / len(self.templates)

    def remove_chunks(self) -> None:
        """The chunk files cut for this workload (produce deletes them as it publishes; the benchmark
        keeps them for the run, then they go)."""
        for folder in {u.path.parent for t in self.templates for u in t.uploads}:
            if folder.name.startswith("callstream-cut-"):
                shutil.rmtree(folder, ignore_errors=True)


def _template(name: str, uploads: list[Upload], source: Path | None = None) -> Template:
    kept = [dataclasses.replace(u, delete_after=False) for u in uploads]
    end = max(u.end_ms for u in kept) - min(u.start_ms for u in kept)
    return Template(name, kept, [u.path.read_bytes() for u in kept], end / 1000, source)


def realistic(settings: Settings, workdir: Path, shape: Shape, seconds: float) -> Workload:
    """Faces that pan, zoom, turn, leave and come back, over textured rooms with sensor noise; two calls
    per shape: H.264/AAC MP4 with a key frame every 2 s and VP8/Opus WebM with one every 4 s."""
    templates = []
    for container, gop in (("mp4", 2.0), ("webm", 4.0)):
        rec = workdir / f"moving-{shape.width}x{shape.height}-{shape.fps}-{int(seconds)}s-gop{gop:g}.{container}"
        if not rec.exists():
            generate_moving_call(settings_ffmpeg(settings), rec, seconds, shape.width, shape.height, shape.fps,
                                 gop, container)
        templates.append(_template(rec.name, recording_uploads(settings, rec, "dual", settings.chunk_seconds), rec))
    return Workload(f"realistic {shape} (MP4 key frames 2 s, WebM 4 s)", templates, settings.chunk_seconds,
                    f"realistic-{shape}")


def photo(settings: Settings, workdir: Path, shape: Shape, seconds: float) -> Workload:
    """The earlier workload, kept as a comparison row: a still photograph panned gently side by side,
    H.264/AAC MP4 with a key frame every second."""
    rec = workdir / f"call-{shape.width}x{shape.height}-{shape.fps}-{int(seconds)}s.mp4"
    if not rec.exists():
        generate_call(settings_ffmpeg(settings), rec, seconds=seconds, width=shape.width, height=shape.height,
                      fps=shape.fps)
    return Workload(f"still photograph {shape} (MP4, key frames 1 s)",
                    [_template(rec.name, recording_uploads(settings, rec, "dual", settings.chunk_seconds), rec)],
                    settings.chunk_seconds, f"photo-{shape}")


def recordings(settings: Settings, files: list[Path], layout: str | None,
               participants: list[tuple[str, str, Path, int]] | None = None) -> Workload:
    """The user's own recordings, each a call cut as produce cuts it (`layout` as produce's --layout);
    `participants` (produce's --participant specs) make one more call of per-participant tracks."""
    templates = [_template(f.name, recording_uploads(settings, f, layout, settings.chunk_seconds), f) for f in files]
    if participants:
        uploads: list[Upload] = []
        for pid, role, path, offset in participants:
            uploads += participant_uploads(settings, pid, role, path, offset, settings.chunk_seconds)
        templates.append(_template("+".join(p.name for _, _, p, _ in participants), uploads))
    names = ", ".join(t.name for t in templates)
    return Workload(f"your recordings ({names})", templates, settings.chunk_seconds)


def settings_ffmpeg(settings: Settings) -> str:
    from pipeline.media.ffmpeg_bin import ffmpeg_exe

    return ffmpeg_exe(settings.ffmpeg_binary)
