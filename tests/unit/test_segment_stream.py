"""Streaming segmentation equals segmenting the whole chunk, whatever the windows and the final length."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.media.segment import SegmentPlanner, effective_duration, segments


@settings(max_examples=500, deadline=None)
@given(start=st.integers(0, 10**7), seg=st.sampled_from([250, 500, 1000, 2000]), tol=st.integers(0, 900),
       steps=st.lists(st.integers(1, 60_000), min_size=1, max_size=8), delta=st.integers(-900, 900))
def test_streamed_segments_equal_the_whole(start, seg, tol, steps, delta):
    tol = min(tol, seg - 1)
    planner = SegmentPlanner(start, seg, tol)
    decoded, out = 0, []
    for step in steps:
        decoded += step
        out += planner.ready(decoded)
    final = max(1, decoded + max(-tol, min(delta, tol)))   # what effective_duration can return
    out += planner.finish(final)
    assert out == segments(start, final, seg)


def test_a_declared_duration_far_from_the_media_is_clamped_and_noted():
    clamped = "duration-ms=86400000 clamped to the 2400 ms that decode"
    assert effective_duration(86_400_000, None, 2_400, 500) == (2_400, clamped)
    assert effective_duration(5_021, 5_060, 5_000, 500) == (5_021, None)   # the recorder's exact cut stands
    assert effective_duration(None, 5_060, 5_000, 500) == (5_060, None)
    assert effective_duration(None, 90_000, 5_000, 500) == (5_000, None)
