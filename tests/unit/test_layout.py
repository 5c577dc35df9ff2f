"""The dual-layout check: photographs side by side read as two views, one photograph as one picture,
and mono audio is called out. Frames are scikit-image's bundled photographs, resized as the sampler does."""

import numpy as np
import pytest

from pipeline.media.layout import SEAM_MIN, check_dual, seam_strength
from pipeline.media.probe import AudioStream, MediaInfo, VideoStream

data = pytest.importorskip("skimage.data")
transform = pytest.importorskip("skimage.transform")

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat"]


def _rs(img: np.ndarray, h: int, w: int) -> np.ndarray:
    return (transform.resize(img, (h, w), anti_aliasing=True) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(data, name)() for name in PHOTOS}


def _pairs(photos):
    names = list(photos)
    return [(photos[a], photos[b]) for a, b in zip(names, names[1:] + names[:1], strict=True)]


def test_one_photograph_reads_as_one_picture(photos):
    scores = [seam_strength(_rs(img, 360, 640)[None]) for img in photos.values()]
    assert max(scores) < SEAM_MIN, scores


def test_two_photographs_side_by_side_read_as_two_views(photos):
    scores = [seam_strength(np.concatenate([_rs(a, 360, 320), _rs(b, 360, 320)], axis=1)[None])
              for a, b in _pairs(photos)]
    assert min(scores) > SEAM_MIN, scores


def test_two_views_with_a_black_gap_between_them_read_as_two_views(photos):
    gap = np.zeros((360, 16, 3), np.uint8)
    scores = [seam_strength(np.concatenate([_rs(a, 360, 312), gap, _rs(b, 360, 312)], axis=1)[None])
              for a, b in _pairs(photos)]
    assert min(scores) > SEAM_MIN, scores


def test_an_edge_off_the_centre_is_not_a_seam():
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:, 200:] = 200            # a door frame a third of the way across
    assert seam_strength(frame[None]) < SEAM_MIN
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:, 320:] = 200            # the same edge exactly at the centre: two views
    assert seam_strength(frame[None]) > SEAM_MIN


def test_check_dual_says_what_would_be_lost(photos):
    one = _rs(photos["astronaut"], 360, 640)[None]
    two = np.concatenate([_rs(photos["astronaut"], 360, 320), _rs(photos["coffee"], 360, 320)], axis=1)[None]
    video = VideoStream("h264", 640, 360, 24.0)
    stereo, mono = AudioStream("aac", 48000, 2), AudioStream("aac", 48000, 1)
    assert check_dual(MediaInfo(10_000, video, stereo), two).warnings == ()
    (picture,) = check_dual(MediaInfo(10_000, video, stereo), one).warnings
    assert "--layout customer" in picture and "one camera's view" in picture
    (voice,) = check_dual(MediaInfo(10_000, None, mono), None).warnings
    assert "mono" in voice and "--layout customer" in voice
    assert len(check_dual(MediaInfo(10_000, video, mono), one).warnings) == 2
    assert check_dual(MediaInfo(10_000, video, stereo), np.zeros((0, 360, 640, 3), np.uint8)).seam is None
