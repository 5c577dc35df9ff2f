"""The analysis the emotion model runs, in-process: requests batched together get what each would
get alone, and inputs that do not fit together are refused before any net runs."""

import numpy as np
import pytest

from pipeline.model.analysis import Analyzer, Request


@pytest.fixture(scope="module")
def analyzer(model_repository):
    return Analyzer.load(model_repository)


def _request(seed, items=3, size=(270, 240)):
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    face = transform.resize(data.astronaut()[0:300, 90:370], (150, 140), preserve_range=True).astype(np.uint8)
    frames = np.zeros((items, 2) + size + (3,), np.uint8) + 40
    for i in range(items):
        for f in range(2):
            y, x = rng.integers(0, size[0] - 150), rng.integers(0, size[1] - 140)
            frames[i, f, y:y + 150, x:x + 140] = face
    audio = (rng.standard_normal((items, 16000)) * 0.05).astype(np.float32)
    lengths = np.array([16000, 9000, 0][:items])
    return Request.of(frames, np.ones((items, 2), bool), audio, lengths)


def test_requests_batched_together_get_what_each_gets_alone(analyzer):
    a, b = _request(1), _request(2, items=2, size=(200, 320))
    together = analyzer.run_many([a, b])
    alone = [analyzer.run_many([a])[0], analyzer.run_many([b])[0]]
    for t, s in zip(together, alone, strict=True):
        assert t.keys() == s.keys()
        for k in t:
            assert np.allclose(t[k], s[k], atol=1e-5, equal_nan=True), k   # VOICE_DIMS: NaN, no net
    assert together[0]["FACE_FOUND"].all() and together[0]["FACE_COUNT"].reshape(-1).tolist() == [2, 2, 2]
    assert together[0]["AROUSAL"][2, 0] == -1 and together[0]["SPEECH_RATIO"][2, 0] == 0


def test_no_frame_of_a_request_costs_a_failure(analyzer):
    """Hostile frames: black, noise, eight faces, a face cut by the border, a 4K frame. Each request
    is answered; a face is reported where one is whole enough to be seen."""
    from skimage import data, transform

    face = transform.resize(data.astronaut()[0:300, 90:370], (120, 112), preserve_range=True).astype(np.uint8)
    rng = np.random.default_rng(3)
    crowd = np.full((270, 480, 3), 60, np.uint8)
    for k in range(8):
        y, x = (k // 4) * 135 + 8, (k % 4) * 120 + 4
        crowd[y:y + 120, x:x + 112] = face
    border = np.full((270, 480, 3), 60, np.uint8)
    border[150:270, 0:70] = face[:, 42:]
    cases = {"black": np.zeros((270, 480, 3), np.uint8), "noise": rng.integers(0, 256, (270, 480, 3), np.uint8),
             "crowd": crowd, "border": border,
             "4k": np.ascontiguousarray(transform.resize(data.astronaut(), (2160, 3840), preserve_range=True)
                                        .astype(np.uint8))}
    found = {}
    for name, frame in cases.items():
        out = analyzer.run(frame[None, None], np.ones((1, 1), bool), np.zeros((1, 1), np.float32), np.zeros(1))
        assert np.isfinite(out["PROBS"]).all() and out["PROBS"].shape == (1, 7), name
        found[name] = bool(out["FACE_FOUND"][0, 0])
    assert found == {"black": False, "noise": False, "crowd": True, "border": found["border"], "4k": True}


@pytest.mark.parametrize("change", ["mask", "audio_rows", "length", "voice"])
def test_inputs_that_do_not_fit_together_are_refused(change):
    frames, mask = np.zeros((2, 1, 8, 8, 3), np.uint8), np.ones((2, 1), bool)
    audio, lengths = np.zeros((2, 100), np.float32), np.array([100, 0])
    voice, voice_lengths = None, None
    if change == "mask":
        mask = np.ones((2, 2), bool)
    elif change == "audio_rows":
        audio = np.zeros((3, 100), np.float32)
    elif change == "length":
        lengths = np.array([101, 0])
    else:
        voice, voice_lengths = np.zeros((2, 50), np.float32), np.array([51, 0])
    with pytest.raises(ValueError):
        Request.of(frames, mask, audio, lengths, voice, voice_lengths)
