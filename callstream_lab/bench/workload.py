"""Synthetic calls at a given shape, cut once into 5-second chunks that every benchmark run reuses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from callstream_lab.synth import generate_call
from pipeline.media.cut import ChunkFile, cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe


@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    fps: int

    @classmethod
    def parse(cls, text: str) -> Shape:  # "640x360@15"
        size, fps = text.split("@")
        w, h = size.split("x")
        return cls(int(w), int(h), int(fps))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@{self.fps}"


@dataclass
class Workload:
    shape: Shape
    recording: Path
    seconds: float
    chunks: list[ChunkFile]
    payloads: list[bytes]

    @property
    def chunk_seconds(self) -> float:
        return self.seconds / len(self.chunks)


def build(workdir: Path, shape: Shape, seconds: float, chunk_seconds: float = 5.0) -> Workload:
    ff = ffmpeg_exe()
    rec = workdir / f"call-{shape.width}x{shape.height}-{shape.fps}-{int(seconds)}s.mp4"
    if not rec.exists():
        generate_call(ff, rec, seconds=seconds, width=shape.width, height=shape.height, fps=shape.fps)
    chunks = cut(ff, rec, chunk_seconds, workdir / f"chunks-{shape.width}x{shape.height}-{shape.fps}")
    return Workload(shape, rec, seconds, chunks, [c.path.read_bytes() for c in chunks])
