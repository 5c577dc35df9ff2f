import numpy as np
import pytest
import torch

from pipeline.model import artifacts
from pipeline.model.face_detection import TrackState, nms, pyramid_scales, track_plan


@pytest.fixture(scope="module")
def detector(model_repository):
    return artifacts.detector(artifacts.version_dir(model_repository, "face_detector"), min_face=40)


def _astronaut(size=(256, 256)):
    from skimage import data, transform

    return (transform.resize(data.astronaut(), size, preserve_range=True)).astype(np.uint8)


def test_finds_the_real_face_where_it_is(detector):
    img = _astronaut()
    found = detector.detect(np.stack([img, img[:, ::-1].copy()]))
    assert (found.scores > 0.99).all()
    x1, y1, x2, y2 = found.boxes[0]
    # Eileen Collins' face sits in the upper middle of the photograph (about x 90-135, y 30-90 at 256 px).
    assert 70 < x1 < 110 and 110 < x2 < 150 and 15 < y1 < 50 and 70 < y2 < 110
    mirrored = found.boxes[1]
    assert abs((256 - mirrored[2]) - x1) < 8  # the mirror image's box mirrors too
    assert found.crops.shape == (2, 64, 64) and found.crops[0].std() > 20


def test_no_face_no_box(detector):
    blank = np.full((1, 200, 200, 3), 90, np.uint8)
    noise = np.random.default_rng(0).integers(0, 255, (1, 200, 200, 3), dtype=np.uint8)
    found = detector.detect(np.concatenate([blank, noise]))
    assert (found.scores == 0).all() and not found.crops.any()


def test_pyramid_and_nms():
    scales = pyramid_scales(360, 640, 40)
    assert scales[0] == pytest.approx(0.3) and min(360, 640) * scales[-1] >= 12
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_track_plan_marks_key_frames_and_the_key_each_other_frame_follows():
    plan, ends = track_plan(np.array([0, 1, 0, 0, 1, 0, 0]), every=3)
    assert plan.tolist() == [-1, -1, 0, 0, 1, -1, 5]
    assert ends == {0: (5, 2), 1: (1, 2)}


def test_a_carried_track_goes_on_where_the_earlier_frames_left_it():
    tracks = np.array([0, 1, 0, 0, 1, 0, 0])
    whole, _ = track_plan(tracks, every=3)
    first, ends = track_plan(tracks[:3], every=3)
    # The rest, carried on: its earlier keys sit at slots 7 (track 0) and 8 (track 1).
    rest, _ = track_plan(tracks[3:], every=3, carried={0: (7, ends[0][1]), 1: (8, ends[1][1])})
    assert first.tolist() == whole[:3].tolist()
    assert rest.tolist() == [7, 8, -1, 5 - 3]
    # A count already at the interval (or past it, from an untrusted hint) searches at once.
    assert track_plan(np.array([0, 0]), every=3, carried={0: (9, 3)})[0].tolist() == [-1, 0]
    assert track_plan(np.array([0]), every=3, carried={0: (9, 10**6)})[0].tolist() == [-1]


def test_a_followed_face_is_where_a_full_search_finds_it(detector):
    img = _astronaut((270, 240))
    frames = np.stack([np.roll(img, (2 * k, 3 * k), axis=(0, 1)) for k in range(6)]
                      + [np.full_like(img, 90)])          # then the caller steps away
    followed = detector.detect(frames, tracks=np.zeros(len(frames), int))
    searched = detector.search(frames)
    assert (followed.scores[:6] > 0.9).all() and followed.scores[6] == 0 and searched.scores[6] == 0
    assert np.abs(followed.boxes[:6] - searched.boxes[:6]).max() < 6


def test_a_hint_without_a_face_is_refused(detector):
    img = _astronaut((270, 240))
    wrong = np.array([[150, 180, 230, 260]], np.float32)    # the shoulder, not the face
    assert detector.verify(img[None], wrong).scores[0] == 0


def _walk(img, steps):
    return np.stack([np.roll(img, (2 * k, 3 * k), axis=(0, 1)) for k in range(steps)])


def test_a_call_tracked_chunk_by_chunk_gets_the_boxes_it_gets_in_one_piece(detector):
    frames = _walk(_astronaut((270, 240)), 12)
    tracks = np.zeros(len(frames), int)
    whole, whole_state = detector.track(frames, tracks, every=5)
    first, state = detector.track(frames[:7], tracks[:7], every=5)
    rest, rest_state = detector.track(frames[7:], tracks[7:], every=5, carried=state)
    assert state[0].frames == 2   # key frame 5 and frame 6 used it
    np.testing.assert_allclose(np.concatenate([first.boxes, rest.boxes]), whole.boxes, atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([first.crops, rest.crops]), whole.crops)
    assert rest_state == whole_state


def test_a_carried_state_saves_the_chunk_its_search(detector, monkeypatch):
    frames = _walk(_astronaut((270, 240)), 4)
    _, state = detector.track(frames[:2], np.zeros(2, int))
    searched = []
    search = detector.search
    monkeypatch.setattr(detector, "search", lambda f: searched.append(len(f)) or search(f))
    found, _ = detector.track(frames[2:], np.zeros(2, int), carried=state)
    assert (found.scores > 0.9).all() and sum(searched) == 0


@pytest.mark.parametrize("hint", [
    TrackState((150.0, 180.0, 230.0, 260.0), 1),      # the shoulder, not the face
    TrackState((-5000.0, -5000.0, -4000.0, -4000.0), 1),  # outside the frame
    TrackState((0.0, 0.0, 1e5, 1e5), 1),               # the whole world
    TrackState((10.0, 10.0, 5.0, 5.0), 1),             # not a box
])
def test_a_wrong_carried_state_costs_a_search_not_a_face(detector, hint):
    frames = _walk(_astronaut((270, 240)), 2)
    found, _ = detector.track(frames, np.zeros(2, int), carried={0: hint})
    searched = detector.search(frames)
    assert (found.scores > 0.9).all()
    assert np.abs(found.boxes - searched.boxes).max() < 6


def test_a_face_that_moved_since_its_key_frame_is_followed_not_searched(detector, monkeypatch):
    """Half a second apart a caller's face can move by half its size (the realistic workload's boxes
    overlap by 0.53 between samples): the check looks on a grid around the key box, so such a frame is
    found where a full search finds it, without the search."""
    img = _astronaut((270, 240))
    key = detector.search(img[None])
    side = key.boxes[0][2] - key.boxes[0][0]
    d = int(round(0.45 * side))
    moved = np.roll(img, (d // 2, d), axis=(0, 1))
    frames = np.stack([img, moved])
    searched = []
    search = detector.search
    monkeypatch.setattr(detector, "search", lambda f: searched.append(len(f)) or search(f))
    found = detector.detect(frames, tracks=np.zeros(2, int))
    assert searched == [1]                      # the key frame only
    assert (found.scores > 0.9).all()
    assert np.abs(found.boxes[1] - search(moved[None]).boxes[0]).max() < 6
