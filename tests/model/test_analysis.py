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
    return Request.of(frames, np.ones((items, 2), bool), audio, lengths, np.zeros(items, np.int32))


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


def _walking(items, start=0):
    """A seated caller moving a little between samples, two frames per item, one view."""
    from skimage import data, transform

    face = transform.resize(data.astronaut(), (270, 240), preserve_range=True).astype(np.uint8)
    frames = np.stack([[np.roll(face, (k, 2 * k), axis=(0, 1)) for k in (start + 2 * i, start + 2 * i + 1)]
                       for i in range(items)])
    return {"FRAMES": frames, "FRAME_MASK": np.ones((items, 2), bool), "AUDIO": np.zeros((items, 1), np.float32),
            "AUDIO_LEN": np.zeros((items, 1), np.int32), "TRACK": np.zeros((items, 1), np.int32)}


def test_chunks_chained_by_their_track_state_get_what_one_request_gets(model_repository):
    fast = Analyzer.load(model_repository, keyframe_every=6)
    whole = _walking(6)
    parts = [{k: v[i:i + 2] for k, v in whole.items()} for i in (0, 2, 4)]
    chained = fast.run_chained(parts)
    alone = fast.run(whole["FRAMES"], whole["FRAME_MASK"], whole["AUDIO"], whole["AUDIO_LEN"], whole["TRACK"])
    for k in ("PROBS", "FACE_PROBS", "FACE_COUNT", "FACE_FOUND"):
        np.testing.assert_allclose(np.concatenate([c[k] for c in chained]), alone[k], atol=1e-5, err_msg=k)
    # The state after the last part is the one-request state; the first part's was carried on.
    np.testing.assert_allclose(chained[-1]["TRACK_STATE"], alone["TRACK_STATE"][4:], atol=1e-4)
    assert chained[0]["TRACK_STATE"][0, 4] == 4 and (alone["TRACK_STATE"][:, 4] == 12 - 6).all()


@pytest.mark.parametrize("hint", [[np.nan] * 5, [np.inf, 0, -np.inf, 5, 3], [1e30, 1e30, 2e30, 2e30, 1e30],
                                  [10, 10, 200, 200, -7]])
def test_a_hostile_hint_is_no_hint(analyzer, hint):
    t = _walking(2)
    plain = analyzer.run(t["FRAMES"], t["FRAME_MASK"], t["AUDIO"], t["AUDIO_LEN"], t["TRACK"])
    hinted = analyzer.run_many([Request.of(t["FRAMES"], t["FRAME_MASK"], t["AUDIO"], t["AUDIO_LEN"], t["TRACK"],
                                           np.array([hint, hint], np.float32))])[0]
    assert hinted["FACE_FOUND"].all()
    np.testing.assert_allclose(hinted["PROBS"], plain["PROBS"], atol=0.05)


def test_a_hint_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="HINT"):
        Request.of(np.zeros((2, 1, 8, 8, 3), np.uint8), np.ones((2, 1), bool), np.zeros((2, 4), np.float32),
                   np.array([4, 4]), np.array([0, 0]), np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("change", ["mask", "audio_rows", "length", "track"])
def test_inputs_that_do_not_fit_together_are_refused(change):
    frames, mask = np.zeros((2, 1, 8, 8, 3), np.uint8), np.ones((2, 1), bool)
    audio, lengths, tracks = np.zeros((2, 100), np.float32), np.array([100, 0]), np.array([0, 0])
    if change == "mask":
        mask = np.ones((2, 2), bool)
    elif change == "audio_rows":
        audio = np.zeros((3, 100), np.float32)
    elif change == "length":
        lengths = np.array([101, 0])
    else:
        tracks = np.array([0])
    with pytest.raises(ValueError):
        Request.of(frames, mask, audio, lengths, tracks)
