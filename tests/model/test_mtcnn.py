import numpy as np
import pytest
import torch

from pipeline.model import artifacts
from pipeline.model.mtcnn import nms, pyramid_scales


@pytest.fixture(scope="module")
def detector(model_repository):
    """MTCNN, the detector of earlier model versions, still selectable in a manifest."""
    return artifacts.detector(artifacts.version_dir(model_repository, "face_detector"), min_face=40, kind="mtcnn")


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
