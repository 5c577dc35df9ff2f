"""Which files a live process still holds: open, or mapped into its memory.

Cleanup of scratch storage (chunk files a killed worker left, shared-memory regions of a killed Triton)
must never remove what a live process uses: another worker's chunk, or the regions of a second stack
that shares /dev/shm on the same host. /proc tells: a process's open files are its `fd` links, a
shared-memory region it mapped is a line of its `maps` even after the descriptor is closed.
"""

from __future__ import annotations

import os
from pathlib import Path


def held(paths: set[str], proc: Path = Path("/proc")) -> set[str]:
    """The members of `paths` that some process has open or mapped (as far as /proc lets us see)."""
    found: set[str] = set()
    if not paths:
        return found
    for pid_dir in proc.glob("[0-9]*"):
        try:
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target in paths:
                    found.add(target)
        except OSError:   # a process that exited, or one we may not look into
            pass
        try:
            with open(pid_dir / "maps", "rb") as maps:
                for line in maps:
                    if b"/" in line:
                        name = line[line.index(b"/"):].rstrip(b"\n").decode(errors="replace")
                        name = name.removesuffix(" (deleted)")
                        if name in paths:
                            found.add(name)
        except OSError:
            pass
    return found


def remove_unheld(candidates: dict[str, Path]) -> list[Path]:
    """Delete the candidate files (by path string) that no live process holds; returns those removed."""
    in_use = held(set(candidates))
    removed = []
    for name, path in candidates.items():
        if name not in in_use:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
