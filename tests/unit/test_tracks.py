"""The worker's memory of each view's face-tracking state: handed back only where the media follows on."""

import numpy as np

from pipeline.worker.tracks import TrackMemory

KEY = ("call", "", "customer")
STATE = np.array([1, 2, 3, 4, 5], np.float32)


def test_a_state_goes_on_to_media_that_follows_on_at_the_same_size():
    m = TrackMemory(max_gap_ms=1000)
    m.put(KEY, 5000, (270, 240), STATE)
    assert m.get(KEY, 5000, (270, 240)) is STATE
    assert m.get(KEY, 5900, (270, 240)) is STATE         # a short pause still follows on
    assert m.get(KEY, 6500, (270, 240)) is None          # a longer one does not
    assert m.get(KEY, 2000, (270, 240)) is None          # nor media from before it
    assert m.get(KEY, 5000, (360, 240)) is None          # a new frame size: boxes mean nothing there
    assert m.get(("other", "", "customer"), 5000, (270, 240)) is None


def test_an_older_chunk_finishing_late_never_replaces_a_newer_state():
    m = TrackMemory()
    m.put(KEY, 10_000, (270, 240), STATE)
    m.put(KEY, 5000, (270, 240), STATE * 0)
    assert m.get(KEY, 10_000, (270, 240)) is STATE
    m.put(KEY, 15_000, (270, 240), None)                  # the view's key frame had no face: forgotten
    assert m.get(KEY, 15_000, (270, 240)) is None and len(m) == 0


def test_memory_is_bounded_least_recently_used_first():
    m = TrackMemory(max_views=3)
    for i in range(3):
        m.put(("c", "", str(i)), 1000, (2, 2), STATE)
    assert m.get(("c", "", "0"), 1000, (2, 2)) is not None   # used: kept
    m.put(("c", "", "3"), 1000, (2, 2), STATE)
    assert len(m) == 3 and m.get(("c", "", "1"), 1000, (2, 2)) is None
    m.forget([("c", "", "0"), ("c", "", "9")])
    assert len(m) == 2
