"""Time this process has been running, as opposed to time that passed.

A worker stopped by SIGSTOP, a VM pause or a long stall wakes up to find its wall-clock deadlines long
gone: a decode budget measured on the wall clock would call a healthy chunk `decode_timeout` because
the process slept through it. The budgets here count only the time the process ran. One daemon thread
ticks every TICK_S; each tick adds the time since the last one, capped at MAX_STEP_S, so a pause of
any length adds at most MAX_STEP_S. The same record tells the worker whether a pause long enough to
lose its consumer-group membership happened while a message was in flight (worker/handler.py).

MAX_STEP_S is well above what a busy interpreter delays a thread (the GIL switch interval is 5 ms) and
well below the consumer session timeout, so real work always counts and a pause that costs membership
is always seen.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

TICK_S = 0.1
MAX_STEP_S = 1.0


@dataclass(frozen=True)
class Mark:
    """A point in time on both clocks: how much of what followed was a pause is their difference."""
    wall: float
    running: float


class Deadline:
    def __init__(self, clock: RunningClock, due: float, action: Callable[[], None]) -> None:
        self.clock, self.due, self.action = clock, due, action
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class RunningClock:
    """`running()` advances only while the process runs; deadlines fire on it. Thread-safe."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, max_step_s: float = MAX_STEP_S) -> None:
        self._monotonic, self.max_step_s = monotonic, max_step_s
        self._lock = threading.Lock()
        self._last = monotonic()
        self._running = 0.0
        self._due: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def running(self) -> float:
        """Seconds run so far (as of the last tick; a tick is at most TICK_S old while the process runs)."""
        with self._lock:
            return self._running

    def mark(self) -> Mark:
        with self._lock:
            return Mark(self._monotonic(), self._running)

    def paused_since(self, mark: Mark) -> float:
        """Seconds since `mark` that the process did not run. Conservative: if the ticker has not run
        since a pause ended, the whole pause counts (the wall clock moved on, the running clock not yet)."""
        with self._lock:
            return max(0.0, (self._monotonic() - mark.wall) - (self._running - mark.running) - self.max_step_s)

    def call_after(self, seconds: float, action: Callable[[], None]) -> Deadline:
        """Run `action` (on the ticker thread) once the process has run `seconds` more."""
        with self._lock:
            d = Deadline(self, self._running + max(0.0, seconds), action)
            heapq.heappush(self._due, (d.due, next(self._order), d))
            self._start()
        return d

    def start(self) -> None:
        """Tick from now on (deadlines start it too): `paused_since` needs a clock that runs."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._last = self._monotonic()
            self._thread = threading.Thread(target=self._loop, name="running-clock", daemon=True)
            self._thread.start()

    def tick(self) -> None:
        """Advance by the time since the last tick (capped) and fire what is due."""
        fire = []
        with self._lock:
            now = self._monotonic()
            self._running += min(max(0.0, now - self._last), self.max_step_s)
            self._last = now
            while self._due and (self._due[0][2].cancelled or self._due[0][0] <= self._running):
                d = heapq.heappop(self._due)[2]
                if not d.cancelled:
                    fire.append(d)
        for d in fire:
            d.action()

    def _loop(self) -> None:
        while True:
            time.sleep(TICK_S)
            self.tick()


CLOCK = RunningClock()
