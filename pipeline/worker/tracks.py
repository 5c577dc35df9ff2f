"""Each view's face-tracking state, carried from one of a call's chunks to the next.

The model returns where it last searched a view's face (TRACK_STATE); handing that back with the
call's next chunk (HINT) lets the chunk start by checking that box instead of with a full search of
its own (a search was about a fifth of a 5-s chunk's model time). A state is only a place to look
first: the model still has to find a face there, so a stale or missing state costs one search, never
a wrong face. It is handed back only when the next media follows on without a gap and at the same
frame size, and the memory is bounded: a worker that restarts, or takes over a partition, simply
starts by searching.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

MAX_GAP_MS = 1000        # media further apart than this (a pause, a lost chunk) starts with a search
MAX_VIEWS = 20_000       # views remembered per worker (about 150 bytes each), least recently used dropped

Key = tuple[str, str, str]   # call, chunk stream, participant


@dataclass(frozen=True)
class Carried:
    end_ms: int                 # call time the state's last frame belongs to (its segment's end)
    shape: tuple[int, int]      # frame height, width of the view
    state: np.ndarray           # (5,) TRACK_STATE


class TrackMemory:
    def __init__(self, max_views: int = MAX_VIEWS, max_gap_ms: int = MAX_GAP_MS) -> None:
        self.max_views, self.max_gap_ms = max_views, max_gap_ms
        self._views: OrderedDict[Key, Carried] = OrderedDict()

    def __len__(self) -> int:
        return len(self._views)

    def get(self, key: Key, start_ms: int, shape: tuple[int, int]) -> np.ndarray | None:
        """The view's state if its media goes on at `start_ms` from where the state left off."""
        c = self._views.get(key)
        if c is None or c.shape != shape or abs(start_ms - c.end_ms) > self.max_gap_ms:
            return None
        self._views.move_to_end(key)
        return c.state

    def put(self, key: Key, end_ms: int, shape: tuple[int, int], state: np.ndarray | None) -> None:
        """Remember the view's state after media up to `end_ms`; None forgets it (its key frame had no
        face). A chunk finishing after a later one of the same view (concurrent processing) never
        replaces the later state."""
        c = self._views.get(key)
        if c is not None and c.end_ms > end_ms:
            return
        if state is None:
            self._views.pop(key, None)
            return
        self._views[key] = Carried(end_ms, shape, state)
        self._views.move_to_end(key)
        while len(self._views) > self.max_views:
            self._views.popitem(last=False)

    def forget(self, keys: list[Key]) -> None:
        """The call has ended: nothing of it is needed again."""
        for key in keys:
            self._views.pop(key, None)
