"""The chunk's payload as a file on scratch storage (demuxers need to seek), and removing the ones a
killed worker left behind."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from pipeline.media.holders import remove_unheld


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
    return remove_unheld(candidates)
