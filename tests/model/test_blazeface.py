"""BlazeFace as served: the converted net against the .tflite original, MediaPipe's decoding and
merging, faces found in real photographs turned, scaled and moved, and crops levelled by the eyes."""

import numpy as np
import pytest

from pipeline.model import artifacts
from pipeline.model.blazeface import FULL_RANGE, SHORT_RANGE, VARIANTS, Fit, best_faces, decode, fitted
from pipeline.model.build.sources import BLAZEFACE
from pipeline.model.crops import CropSpec, face_crop


@pytest.fixture(scope="module")
def detector(model_repository):
    return artifacts.detector(artifacts.version_dir(model_repository, "face_detector"), min_face=20)


def _photo(name="astronaut"):
    from skimage import data

    return getattr(data, name)()


def _inputs(variant, seed=0):
    """Real faces and noise at the net's trained size, fitted as the detector feeds the net."""
    from skimage import transform

    rng = np.random.default_rng(seed)
    photo = _photo()
    frames = [transform.resize(photo, (360, 640), preserve_range=True).astype(np.uint8),
              np.ascontiguousarray(photo[:, ::-1]),
              rng.integers(0, 256, (360, 640, 3), np.uint8)]
    images = [fitted(f[None], Fit(variant.size / max(f.shape[:2]), variant.size, variant.size)) for f in frames]
    return np.concatenate(images)


@pytest.mark.parametrize("name", ["short", "full"])
def test_the_converted_net_answers_as_the_tflite_original(model_repository, name):
    """Same weights, same graph: every regressor and logit of the ONNX net built by `models build`
    (batch 3) within 2e-3, or 1e-5 of the value (the black padding's logits reach -3e4), of the original
    run by TensorFlow Lite one image at a time (float16 weights run in float32 by both; XNNPACK sums
    in another order)."""
    interpreter_cls = pytest.importorskip("tflite_runtime.interpreter").Interpreter
    variant = VARIANTS[name]
    original = interpreter_cls(model_path=str(BLAZEFACE[name].path()))
    original.allocate_tensors()
    (inp,), outs = original.get_input_details(), original.get_output_details()
    images = _inputs(variant)
    expected = []
    for image in images:
        original.set_tensor(inp["index"], image[None])
        original.invoke()
        regressors, logits = (original.get_tensor(o["index"])[0] for o in outs)
        expected.append(np.concatenate([regressors, logits], axis=1))
    net = artifacts.detector(artifacts.version_dir(model_repository, "face_detector"), variant=name).net
    got = net(images)
    assert got.shape == (3, len(variant.anchors()), 17)
    np.testing.assert_allclose(got, np.stack(expected), atol=2e-3, rtol=1e-5)


def test_anchors_follow_mediapipes_layout():
    short, full = SHORT_RANGE.anchors(), FULL_RANGE.anchors()
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # Stride 8: 16x16 cells, two anchors each, row by row; then stride 16: 8x8 cells, six each (pixels).
    np.testing.assert_allclose(short[:3], [[4, 4], [4, 4], [12, 4]])
    np.testing.assert_allclose(short[512:518], [[8, 8]] * 6)
    np.testing.assert_allclose(full[-1], [190, 190])
    # Another input size: the cells follow it.
    assert SHORT_RANGE.anchors(144, 256).shape == (18 * 32 * 2 + 9 * 16 * 6, 2)


def test_overlapping_boxes_merge_weighted_by_score_and_the_top_score_stays():
    anchors = np.full((4, 2), 64.0, np.float32)
    raw = np.zeros((1, 4, 17), np.float32)
    raw[0, :, 2:4] = 32                        # 32-px boxes
    raw[0, 1, 0] = 4                           # the second box 4 px to the right
    raw[0, 2, 0] = 60                          # the third far away (no overlap)
    raw[0, :, 16] = [3.0, 1.0, 5.0, -3.0]      # the fourth below the threshold
    boxes, scores = decode(raw, anchors)
    faces, top = best_faces(boxes, scores)
    assert top[0] == pytest.approx(1 / (1 + np.exp(-5.0)), rel=1e-5)   # the far box is the most confident
    np.testing.assert_allclose(faces[0, 0], boxes[0, 2, 0], atol=1e-5)
    raw[0, 2, 16] = -5.0                       # without it, the first two merge by their scores
    boxes, scores = decode(raw, anchors)
    faces, top = best_faces(boxes, scores)
    w = scores[0, :2] / scores[0, :2].sum()
    np.testing.assert_allclose(faces[0, 0, 0], w[0] * boxes[0, 0, 0, 0] + w[1] * boxes[0, 1, 0, 0], atol=1e-5)
    assert top[0] == pytest.approx(scores[0, 0])
    assert best_faces(boxes, np.zeros_like(scores))[1][0] == 0


def test_frames_are_scaled_so_the_smallest_face_asked_for_is_one_the_net_finds():
    # A 270x480 view and a 40-px smallest face: scaled by 20/40, an input of 144 x 240, one pass.
    assert Fit.passes(270, 480, SHORT_RANGE, 40) == [Fit(0.5, 144, 240)]
    # A small frame is fitted into the trained side, never further up.
    assert Fit.passes(100, 80, SHORT_RANGE, 40) == [Fit(1.28, 128, 112)]
    # A larger smallest face: the frame fitted into 128 as MediaPipe does, no smaller.
    assert Fit.passes(720, 1280, SHORT_RANGE, 200) == [Fit(0.1, 80, 128)]
    # A 4K frame: small faces at 0.5, then a quarter of that (larger faces), then fitted into 128.
    assert [f.scale for f in Fit.passes(2160, 3840, SHORT_RANGE, 40)] == [0.5, 0.125, 128 / 3840]


def test_the_same_face_at_the_trained_size_and_at_twice_it(model_repository):
    """The replay is fully convolutional: a frame fed at 256 px finds the face it finds at 128."""
    from skimage import data, transform

    frame = transform.resize(data.astronaut(), (256, 256), preserve_range=True).astype(np.uint8)[None]
    folder = artifacts.version_dir(model_repository, "face_detector")
    at_128 = artifacts.detector(folder, min_face=40).detect(frame)    # scale 20/40: 128 px
    at_256 = artifacts.detector(folder, min_face=20).detect(frame)    # scale 1: 256 px
    assert at_128.scores[0] > 0.9 and at_256.scores[0] > 0.9
    assert np.abs(at_128.boxes - at_256.boxes).max() < 8


def _placed(photo, angle=0.0, scale=1.0, shift=(0, 0), size=(360, 640)):
    from skimage import transform

    img = transform.rotate(photo, angle, resize=False, mode="edge", preserve_range=True)
    h = int(size[0] * 0.9 * scale)
    img = transform.resize(img, (h, int(h * img.shape[1] / img.shape[0])), preserve_range=True)
    canvas = np.full(size + (3,), 50, np.uint8)
    y = (size[0] - img.shape[0]) // 2 + shift[0]
    x = (size[1] - img.shape[1]) // 2 + shift[1]
    ys, xs = slice(max(y, 0), min(y + img.shape[0], size[0])), slice(max(x, 0), min(x + img.shape[1], size[1]))
    canvas[ys, xs] = img[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x].round().clip(0, 255).astype(np.uint8)
    return canvas


@pytest.mark.parametrize("photo", ["astronaut", "chelsea_face"])
def test_real_faces_are_found_turned_scaled_and_moved(detector, photo):
    """scikit-image's astronaut (Eileen Collins) and, as a face it must not claim, Chelsea the cat."""
    from skimage import data

    base = data.astronaut()[0:300, 90:370] if photo == "astronaut" else data.chelsea()
    frames = np.stack([_placed(base, a, s, d) for a, s, d in
                       [(0, 1, (0, 0)), (20, 1, (0, 0)), (-25, 1, (0, 0)), (0, 0.5, (0, 0)), (0, 0.7, (40, 150)),
                        (10, 0.8, (-30, -180))]])
    found = detector.detect(frames)
    if photo == "astronaut":
        assert (found.scores > 0.6).all(), found.scores
        # The eyes come out in image order and level with the turn: the left one first.
        dx, dy = found.eyes[:, 2] - found.eyes[:, 0], found.eyes[:, 3] - found.eyes[:, 1]
        assert (dx > 0).all()
        turned = np.degrees(np.arctan2(dy, dx))
        assert abs(turned[1] - turned[0] + 20) < 8 and abs(turned[2] - turned[0] - 25) < 8, turned
    else:
        assert (found.scores == 0).all(), found.scores


def test_a_levelled_crop_of_a_turned_face_is_the_crop_of_the_upright_one(detector):
    from skimage import data

    base = data.astronaut()[0:300, 90:370]
    upright, turned = _placed(base, 0), _placed(base, 18)
    found = detector.detect(np.stack([upright, turned]))
    spec = CropSpec(64, 0.1, "gray")
    a = face_crop(upright, found.boxes[0], spec, found.eyes[0]).astype(float)
    b = face_crop(turned, found.boxes[1], spec, found.eyes[1]).astype(float)
    plain = face_crop(turned, found.boxes[1], spec).astype(float)
    corr = lambda x, y: np.corrcoef(x.ravel(), y.ravel())[0, 1]  # noqa: E731
    # Levelled, the turned face's crop is much closer to the upright one's than the plain crop is (the
    # boxes of a turned and an upright face differ too, so not equal).
    assert corr(a, b) > 0.75 and corr(a, b) > corr(a, plain) + 0.15, (corr(a, b), corr(a, plain))


def test_a_crop_without_eyes_or_with_level_eyes_is_the_plain_crop():
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8)
    box = np.array([40, 30, 90, 85], np.float32)
    for spec in (CropSpec(64, 0.1, "gray"), CropSpec(48, 0.2, "rgb")):
        plain = face_crop(frame, box, spec)
        assert np.array_equal(face_crop(frame, box, spec, np.array([50, 50, 80, 50], np.float32)), plain)
        assert np.array_equal(face_crop(frame, box, spec, np.zeros(4, np.float32)), plain)


def test_the_box_is_framed_as_mtcnn_frames_the_same_faces(model_repository):
    """The calibration behind BOX_SCALE and BOX_RAISE, measured again: on LFW's faces, MTCNN's square
    and BlazeFace's framed box agree in side and centre (medians within 5 % of a side)."""
    from callstream_lab.bench.agreement import lfw_views

    frames = lfw_views()["FRAMES"][:, 0]
    folder = artifacts.version_dir(model_repository, "face_detector")
    ours = artifacts.detector(folder).detect(frames)
    mtcnn = artifacts.detector(folder, kind="mtcnn").detect(frames)
    both = (ours.scores > 0) & (mtcnn.scores >= 0.9)
    assert both.sum() >= 85
    a, b = ours.boxes[both], mtcnn.boxes[both]
    side_a = a[:, 2] - a[:, 0]
    side_b = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    assert abs(np.median(side_b / side_a) - 1) < 0.05
    shift = ((b[:, :2] + b[:, 2:]) / 2 - (a[:, :2] + a[:, 2:]) / 2) / side_a[:, None]
    assert (np.abs(np.median(shift, axis=0)) < 0.06).all(), np.median(shift, axis=0)


@pytest.mark.parametrize("name, small, large", [("short", 24, 110), ("full", 16, 150)])
def test_each_variant_finds_faces_across_its_declared_range(model_repository, name, small, large):
    """The ends of Variant.smallest_face .. largest_face hold: the astronaut's face at about `small`
    and `large` pixels of the net's input (fed at scale 1) is found."""
    from skimage import data, transform

    variant = VARIANTS[name]
    assert variant.smallest_face <= small and large <= variant.largest_face + 32
    net = artifacts.detector(artifacts.version_dir(model_repository, "face_detector"), variant=name).net
    photo = data.astronaut()[0:300, 90:370]
    for face in (small, large):
        height = int(face * 300 / 105)          # the face is about 105 of the crop's 300 rows
        img = transform.resize(photo, (height, height * 280 // 300), preserve_range=True).astype(np.uint8)
        side = -(-max(height, 256) // variant.align) * variant.align
        canvas = np.full((side, side, 3), 50, np.uint8)
        canvas[:img.shape[0], :img.shape[1]] = img
        fit = Fit(1.0, side, side)
        raw = net(fitted(canvas[None], fit)).reshape(1, -1, 17)
        faces, scores = best_faces(*decode(raw, variant.anchors(side, side)))
        found = faces[0, 1, 0] - faces[0, 0, 0]
        assert scores[0] > 0.6 and 0.6 * face < found < 1.6 * face, (face, scores[0], found)
