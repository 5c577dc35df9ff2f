"""@vladmandic/face-api's expression net: our conversion against the TF.js original, run by the
package's own code in Node, on real faces and noise; then installed and served like a user's model."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.model import manifest as mf
from pipeline.model.analysis import Analyzer
from pipeline.model.build import faceapi
from pipeline.model.nets import FaceExpression
from pipeline.model.repository import add
from pipeline.shared.labels import DFEW_LABELS
from tests import model_kit

REFERENCE = Path(__file__).with_name("faceapi_reference.mjs")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the TF.js original cannot run as the reference")
    try:
        return faceapi.fetch(tmp_path_factory.mktemp("npm"))
    except faceapi.ConversionError as exc:
        pytest.skip(f"the npm registry is unreachable or refused the package: {exc}")


@pytest.fixture(scope="module")
def converted(package, tmp_path_factory):
    return faceapi.convert(package, tmp_path_factory.mktemp("faceapi"))


def _crops() -> np.ndarray:
    """112x112 RGB: the astronaut's face in three framings, mirrored, and two noise images."""
    from skimage import data, transform

    img = data.astronaut()
    faces = []
    for c in (img[30:230, 140:320], img[20:250, 120:340], img[40:210, 160:300]):
        for view in (c, c[:, ::-1]):
            faces.append(transform.resize(view, (112, 112), preserve_range=True, anti_aliasing=True))
    noise = np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3))
    return np.clip(np.round(np.concatenate([np.stack(faces), noise])), 0, 255).astype(np.uint8)


def _tfjs(package: Path, crops: np.ndarray, tmp: Path) -> np.ndarray:
    crops.astype(np.float32).tofile(tmp / "in.f32")
    done = subprocess.run(["node", str(REFERENCE), str(package), str(tmp / "in.f32"), str(len(crops))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.asarray(json.loads(done.stdout), np.float32)


def test_the_conversion_matches_tfjs(package, converted, tmp_path):
    crops = _crops()
    expected = _tfjs(package, crops, tmp_path)     # face-api's order is DFEW's: neutral, happy, ...
    spec = mf.load(converted).face[0]
    ours = FaceExpression.load(spec, converted.parent / spec.file).probs(crops)
    assert np.abs(ours - expected).max() <= 1e-5
    assert (ours.argmax(1) == expected.argmax(1)).all()
    # The smiling astronaut, cropped tight to the face as face-api's own detector would: happy (looser
    # framings that show hair and suit read sad or surprised, in the original as in ours).
    assert (expected[4:6].argmax(1) == DFEW_LABELS.index("happy")).all()


def test_installed_and_served_through_the_manifest_path(converted, model_repository, tmp_path):
    repo = model_kit.scratch_repository(model_repository, tmp_path / "models")
    version, report, new = add(converted, repo)
    assert new and version.model_version == "faceapi-expression/1" and version.triton_name == "faceapi-expression-v1"
    analyzer = Analyzer.load(repo, model=version.triton_name)
    view = model_kit.astronaut_view()
    out = analyzer.run(np.stack([np.stack([view, view])]), np.ones((1, 2), bool), np.zeros((1, 1), np.float32),
                       np.zeros(1))
    assert out["FACE_FOUND"][0, 0] and DFEW_LABELS[int(out["PROBS"][0].argmax())] == "happy"
