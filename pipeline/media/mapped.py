"""Reading a container's own tables straight from the mapped file, whatever its bytes say.

Both planners (Matroska, MP4/MOV) walk untrusted structures through a memoryview of the mapped chunk.
A walk that fails is caught inside the map: the traceback's frames hold views of it, and a map with
live views cannot be closed."""

from __future__ import annotations

import mmap
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Unreadable(Exception):
    """The bytes are not the container as its reader understands it."""


def read_mapped(path: Path, read: Callable[[memoryview], T]) -> T | None:
    """`read` over the file's bytes, or None when the file is empty, cannot be opened, or `read`
    finds it unreadable (the decoder then does everything the slow, safe way)."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) == 0:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                buf = memoryview(mm)
                try:
                    return read(buf)
                except (Unreadable, ValueError, IndexError, StopIteration):
                    return None
                finally:
                    buf.release()
    except OSError:
        return None
