"""The benchmark's agreement check: it judges the served detector against MTCNN on the same
tensors, and notices when the two disagree."""

import pytest

from callstream_lab.bench.agreement import compare, photo_views, with_detector
from pipeline.model.analysis import Analyzer


@pytest.fixture(scope="module")
def analyzers(model_repository):
    return with_detector(Analyzer.load(model_repository), model_repository, "mtcnn"), Analyzer.load(model_repository)


def test_the_served_detector_is_judged_against_mtcnn(analyzers):
    reference, fast = analyzers
    views = photo_views(views=2)
    same = compare([[views]], reference, reference)
    assert same["faced"] == same["fast_faced"] > 0 and same["label_agreement"] == 1.0
    judged = compare([[views]], reference, fast)
    assert judged["faced"] == same["faced"] and judged["fast_faced"] > 0


class _Blind:
    """A detector that never finds a face: the agreement must say so."""

    def __init__(self, inner):
        self.inner, self.trusted = inner, inner.trusted

    def empty(self, n):
        return self.inner.empty(n)

    def detect(self, frames):
        return self.inner.empty(len(frames))


def test_a_detector_that_finds_nothing_is_noticed(analyzers, model_repository):
    reference, _ = analyzers
    blind = Analyzer.load(model_repository)
    blind.detector = _Blind(blind.detector)
    judged = compare([[photo_views(views=2)]], reference, blind)
    assert judged["fast_faced"] == 0 and judged["label_agreement"] == 0.0 and judged["face_found_agreement"] < 0.2


def test_on_other_peoples_faces_the_served_detector_finds_at_least_what_mtcnn_finds(analyzers):
    """LFW's 100 faces (25 px, upscaled, turned, moved): found at least as often as by MTCNN; on its 100
    patches without a face, few claimed (MTCNN claims none, BlazeFace a few of the face-like ones)."""
    from callstream_lab.bench.agreement import lfw_views

    reference, fast = analyzers
    faces = compare([[lfw_views()]], reference, fast)
    assert faces["segments"] == 100 and faces["fast_faced"] >= faces["faced"] >= 90
    none = compare([[lfw_views(False)]], reference, fast)
    assert none["faced"] <= 2 and none["fast_faced"] <= 10
