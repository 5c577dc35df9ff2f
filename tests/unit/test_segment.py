from itertools import pairwise

import pytest

from pipeline.contract import ChunkMeta, parse_channels
from pipeline.media.segment import Segment, participants, segments, views, wants


def track_views(layout, width, channels):
    return views(ChunkMeta("c", 0, 0, layout=layout), "dual", width, channels)


def test_segments_sit_on_the_call_grid():
    assert segments(5000, 5000, 1000) == [Segment(s, s + 1000) for s in range(5000, 10000, 1000)]


def test_unaligned_chunk_splits_edge_cells_so_neighbours_abut():
    a = segments(0, 5400, 1000)
    b = segments(5400, 4600, 1000)
    assert a[-1] == Segment(5000, 5400)
    assert b[0] == Segment(5400, 6000)
    cover = sorted(a + b, key=lambda s: s.start_ms)
    assert all(x.end_ms == y.start_ms for x, y in pairwise(cover))
    assert cover[0].start_ms == 0 and cover[-1].end_ms == 10000


def test_slivers_at_chunk_edges_are_pieces_of_their_grid_cell():
    # 21 ms of AAC priming past the grid line: a piece of cell 5000, which the store merges with the
    # next chunk's piece of the same cell into one row (store/timeline.py).
    a = segments(0, 5021, 1000)
    b = segments(5021, 5000, 1000)
    assert a[-1] == Segment(5000, 5021) and a[-1].cell(1000) == 5000
    assert b[0] == Segment(5021, 6000) and b[0].cell(1000) == 5000
    assert segments(990, 30, 1000) == [Segment(990, 1000), Segment(1000, 1020)]


def test_empty_and_invalid():
    assert segments(0, 0, 1000) == []
    with pytest.raises(ValueError):
        segments(0, 1000, 0)


def test_dual_layout_splits_picture_and_channels():
    agent, customer = track_views("dual", 480, 2)
    assert (agent.participant_id, agent.x0, agent.x1, agent.channel) == ("agent", 0, 240, 0)
    assert (customer.participant_id, customer.x0, customer.x1, customer.channel) == ("customer", 240, 480, 1)


def test_dual_layout_with_mono_audio_attributes_no_voice():
    assert [v.channel for v in track_views("dual", 480, 1)] == [None, None]


def test_single_participant_layouts_and_missing_streams():
    (only,) = track_views("customer", 320, 1)
    assert (only.participant_id, only.x0, only.x1, only.channel) == ("customer", 0, 320, 0)
    agent, customer = track_views("dual", None, 2)  # audio-only chunk
    assert agent.x0 is None and customer.channel == 1
    (v,) = track_views("agent", 320, 0)  # video-only
    assert v.channel is None
    with pytest.raises(ValueError):
        track_views("grid", 320, 2)


def test_one_participant_per_chunk():
    meta = ChunkMeta("c", 0, 0, participant_id="att-7", role="supervisor", media="av", audio_channel=1)
    (v,) = views(meta, "dual", 320, 2)
    assert (v.participant_id, v.role, v.x0, v.x1, v.channel) == ("att-7", "supervisor", 0, 320, 1)
    assert participants(meta, "dual") == [("att-7", "supervisor")]
    assert wants(meta) == (True, True)
    assert wants(ChunkMeta("c", 0, 0, participant_id="a", role="customer", media="audio")) == (True, False)[::-1]
    assert wants(ChunkMeta("c", 0, 0, participant_id="a", role="customer", media="video")) == (True, False)


def test_channel_map_gives_one_audio_participant_per_channel():
    meta = ChunkMeta("c", 0, 0, media="audio", audio_channels=parse_channels("ext-1=customer,-,agent"))
    got = views(meta, "dual", 320, 3)
    assert [(v.participant_id, v.role, v.x0, v.channel) for v in got] == [
        ("ext-1", "customer", None, 0), ("agent", "agent", None, 2)]
    assert wants(meta) == (False, True)
    assert [v.participant_id for v in views(meta, "dual", None, 1)] == ["ext-1"]  # a channel the file lacks
