"""Reading ffmpeg's pipes: its stderr drained by a thread (the stream report kept for parsing), exact
reads from its stdout, and stopping a process that is no longer needed."""

from __future__ import annotations

import collections
import re
import subprocess
import threading
from typing import IO

REPORT_BYTES = 200_000    # of ffmpeg's stream report kept for parsing


class Stderr(threading.Thread):
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


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc.stdout:
        proc.stdout.close()


def discard(proc: subprocess.Popen[bytes], n: int) -> None:
    """Read and drop n bytes (what an earlier process already returned), a megabyte at a time."""
    while n > 0:
        part = read_exact(proc, min(n, 1 << 20))
        if not part:
            return
        n -= len(part)


def read_exact(proc: subprocess.Popen[bytes], n: int) -> bytes:
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


