"""The benchmark's agreement check: it must judge the fast path against the reference's own inputs
when given them (frames decoded the old way), and notice when the two disagree."""

import numpy as np
import pytest

from callstream_lab.bench.agreement import compare, photo_views
from pipeline.model.analysis import Analyzer


@pytest.fixture(scope="module")
def analyzers(model_repository):
    return (Analyzer.load(model_repository, tracking=False, vad_run_windows=1 << 30),
            Analyzer.load(model_repository))


def test_the_reference_sees_its_own_frames(analyzers):
    reference, fast = analyzers
    views = photo_views(views=2)
    same = compare([[views]], reference, fast)
    assert compare([[views]], reference, fast, [[views]]) == same
    assert same["faced"] > 0 and same["label_agreement"] == 1.0
    blank = {**views, "FRAMES": np.zeros_like(views["FRAMES"])}  # a reference that sees no face at all
    judged = compare([[blank]], reference, fast, [[views]])
    assert judged["faced"] == same["faced"] and judged["label_agreement"] == 0.0
    assert judged["face_found_agreement"] < 0.2


def test_a_reference_of_other_segments_is_refused(analyzers):
    reference, fast = analyzers
    views = photo_views(views=2)
    fewer = {k: v[:-1] for k, v in views.items()}
    with pytest.raises(ValueError, match="same segments"):
        compare([[views]], reference, fast, [[fewer]])
