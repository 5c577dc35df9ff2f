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
    # A header shorter than the media: the rows cover what decodes, and the note says the length went up.
    assert effective_duration(1_000, None, 5_000, 500) == (5_000, "duration-ms=1000 raised to the 5000 ms that decode")


def test_a_rounding_of_the_container_never_opens_a_cell_of_its_own():
    # Opus cut at 13.7-20.0 s: Matroska declares 6.31 s, 6.30 s decode. Rows end at 20 s, not in a 21st cell.
    assert effective_duration(None, 6_310, 6_300, 500, 13_700, 1000) == (6_300, None)
    # AAC in Matroska: its priming decodes too (6.3147 s) and the container says 6.32 s: padding, not a cell.
    assert effective_duration(None, 6_320, 6_314.7, 500, 13_700, 1000) == (6_300, None)
    # A declared end past a grid line the media never reaches, within the tolerance: no phantom cell.
    assert effective_duration(5_300, None, 4_990, 500, 15_000, 1000) == (5_000, None)


def test_the_end_rule_keeps_every_real_end():
    assert effective_duration(None, 6_350, 6_340, 500, 13_700, 1000) == (6_350, None)   # 50 ms of media past 20 s
    assert effective_duration(5_021, 5_060, 5_000, 500, 0, 1000) == (5_000, None)     # 21 ms past the line: padding
    assert effective_duration(5_021, 5_060, 5_000, 500, 100, 1000) == (5_021, None)   # ends 121 ms into cell 5000
    assert effective_duration(None, 12_008, 12_008, 500, 10_300, 1000) == (12_008, None)   # mid-cell ends stay
    assert effective_duration(None, 30, 30, 500, 5_000, 1000) == (30, None)            # a chunk inside one cell
    assert effective_duration(None, 990, 990, 500, 5_000, 1000) == (990, None)


@settings(max_examples=500, deadline=None)
@given(start=st.integers(0, 10**7), seg=st.sampled_from([250, 500, 1000, 2000]), decoded=st.integers(1, 60_000),
       declared=st.integers(-900, 900))
def test_the_end_rule_only_ever_pulls_an_end_back_to_a_grid_line(start, seg, decoded, declared):
    tol = min(500, seg - 1)
    declared = max(1, decoded + declared)
    plain, _ = effective_duration(None, declared, decoded, tol)
    ruled, _ = effective_duration(None, declared, decoded, tol, start, seg)
    assert ruled == plain or (ruled < plain and (start + ruled) % seg == 0 and plain - ruled < max(seg, 1))
    assert ruled > 0
