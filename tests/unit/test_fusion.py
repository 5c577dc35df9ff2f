import numpy as np
import pytest

from pipeline.model.acoustics import arousal_score, prosody
from pipeline.shared.fusion import (
    FACE_MIN_SCORE,
    Evidence,
    aggregate_face,
    arousal_prior,
    fuse,
    fuse_evidence,
    merge,
)
from pipeline.shared.labels import DFEW_LABELS, FER2013_LABELS, FER2013_TO_DFEW, permutation


def test_fer_order_maps_to_dfew_order():
    fer = np.arange(7)  # value i at FER2013 position i
    dfew = fer[FER2013_TO_DFEW]
    assert [FER2013_LABELS[i] for i in dfew] == list(DFEW_LABELS)
    with pytest.raises(ValueError):
        permutation(("a", "b"))


def test_face_aggregation_weights_by_confidence_and_ignores_untrusted():
    probs = np.array([[1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0]], float)
    agg, score, count = aggregate_face(probs, np.array([0.99, 0.95, 0.5]))
    assert agg[2] == 0 and agg[0] > agg[1] > 0 and np.isclose(agg.sum(), 1)
    assert score == pytest.approx(0.97) and count == 2
    assert aggregate_face(probs, np.zeros(3)) == (None, 0.0, 0)
    assert FACE_MIN_SCORE > 0.5


def test_nothing_observed_yields_no_emotion():
    fused = fuse(None, False, None)
    assert fused.probs is None and fused.label is None and fused.modality == "none"


def test_face_decides_and_voice_only_tilts():
    face = np.array([0.05, 0.8, 0.05, 0.04, 0.02, 0.02, 0.02])
    calm, agitated = fuse(face, True, 0.1), fuse(face, True, 0.95)
    assert calm.label == agitated.label == "happy"
    angry = DFEW_LABELS.index("angry")
    assert agitated.probs[angry] > calm.probs[angry]
    assert fuse(face, False, None).modality == "face"


def test_voice_only_is_weak_and_flagged():
    fused = fuse(None, True, 0.9)
    assert fused.modality == "voice" and not fused.face_found and fused.speech_found
    assert fused.confidence < 0.4
    assert np.isclose(fused.probs.sum(), 1)


def test_arousal_prior_peaks_where_expected():
    assert DFEW_LABELS[int(np.argmax(arousal_prior(0.2)))] == "neutral"
    assert DFEW_LABELS[int(np.argmax(arousal_prior(0.9)))] == "surprise"


def test_arousal_rises_with_each_cue():
    base = arousal_score(-26, 2.5, 4)
    assert base == pytest.approx(0.5)
    assert arousal_score(-14, 2.5, 4) > base
    assert arousal_score(-26, 5.0, 4) > base
    assert arousal_score(-26, 2.5, 6) > base
    assert arousal_score(-45, 0.5, 1) < base


def _tone(f0, seconds=1.0, level=0.3, vibrato=0.0):
    t = np.arange(int(16000 * seconds)) / 16000
    f = f0 * (1 + vibrato * np.sin(2 * np.pi * 3 * t))
    return (level * np.sin(2 * np.pi * np.cumsum(f) / 16000)).astype(np.float32)


def test_prosody_measures_pitch_energy_and_variability():
    steady = prosody(_tone(150))
    assert steady.f0_mean_hz == pytest.approx(150, rel=0.05)
    assert steady.f0_std_semitones < 0.5
    varied = prosody(_tone(150, vibrato=0.2))
    assert varied.f0_std_semitones > steady.f0_std_semitones + 1
    assert prosody(_tone(150, level=0.03)).rms_dbfs < steady.rms_dbfs - 15
    silent = prosody(np.zeros(16000, np.float32))
    assert np.isnan(silent.f0_mean_hz) and silent.syllables_per_s == 0


def _evidence(probs, scores, audio_ms=0, ratio=0.0, arousal=None):
    agg, score, count = aggregate_face(probs, scores)
    return Evidence(len(scores), count, score * count, agg, audio_ms, ratio, arousal)


def test_pieces_of_a_cell_merge_into_what_the_whole_cell_gives():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(2, 12))
        probs = rng.dirichlet(np.ones(7), size=n)
        scores = rng.uniform(0.5, 1.0, size=n)
        cut = int(rng.integers(1, n))
        whole = _evidence(probs, scores)
        merged = merge([_evidence(probs[:cut], scores[:cut]), _evidence(probs[cut:], scores[cut:])])
        assert merged.faces == whole.faces and merged.frames == whole.frames
        if whole.face_probs is None:
            assert merged.face_probs is None
        else:
            np.testing.assert_allclose(merged.face_probs, whole.face_probs)
            assert merged.face_score == pytest.approx(whole.face_score)


def test_one_piece_fuses_exactly_as_the_model_does():
    face = np.array([0.05, 0.8, 0.05, 0.04, 0.02, 0.02, 0.02])
    e = Evidence(4, 3, 2.9, face, 1000, 0.6, 0.7)
    assert np.allclose(fuse_evidence(e).probs, fuse(face, True, 0.7).probs)
    assert fuse_evidence(merge([e])).label == fuse(face, True, 0.7).label


def test_voice_merges_by_speech_time():
    # 300 ms of silence from one chunk and 700 ms of loud speech from the next: one speaking cell.
    quiet = Evidence(0, 0, 0.0, None, 300, 0.0, 0.1)
    loud = Evidence(0, 0, 0.0, None, 700, 0.9, 0.8)
    m = merge([quiet, loud])
    assert m.speech_ratio == pytest.approx(0.63) and m.arousal == pytest.approx(0.8)
    f = fuse_evidence(m)
    assert f.speech_found and not f.face_found and f.modality == "voice"
    assert not fuse_evidence(merge([quiet])).speech_found


def test_evidence_says_what_drove_the_label():
    from pipeline.shared.fusion import FusionParams, explain

    face = np.array([0.05, 0.8, 0.05, 0.04, 0.02, 0.02, 0.02])
    e = Evidence(2, 2, 1.9, face, 1000, 0.8, 0.75, None, np.array([1.4, -0.2, 0.3]))
    f = fuse_evidence(e)
    ev = explain(e, f)
    assert ev["summary"] == "face: happy 0.80 over 2 frames; voice: high arousal (energy +1.4σ); fused: happy"
    assert ev["face"] == {"frames": 2, "faces": 2, "score": 0.95, "top": [["happy", 0.8], ["neutral", 0.05]]}
    assert ev["voice"]["cues"] == {"energy": 1.4, "pitch variability": -0.2, "rate": 0.3}
    assert ev["fusion"] == {"face_weight": 1.0, "arousal_weight": 0.3}
    # A voice-emotion net: its top two classes and its weight; no face in the frames.
    heard = np.array([0.1, 0.7, 0.05, 0.05, 0.04, 0.03, 0.03])
    v = Evidence(2, 0, 0.0, None, 1000, 0.9, 0.5, heard, np.zeros(3))
    params = FusionParams(voice_weight=0.5)
    ev = explain(v, fuse_evidence(v, params), params)
    assert ev["summary"] == "face: none in 2 frames; voice: happy 0.70; fused: happy"
    assert ev["voice"]["top"] == [["happy", 0.7], ["neutral", 0.1]] and ev["fusion"]["voice_weight"] == 0.5
    # Silence, and no media at all.
    quiet = Evidence(0, 0, 0.0, None, 1000, 0.0, None)
    assert explain(quiet, fuse_evidence(quiet))["summary"] == "voice: no speech; fused: no label"
    nothing = Evidence(0, 0, 0.0, None, 0, 0.0, None)
    assert explain(nothing, fuse_evidence(nothing)) is None


def test_a_dimensional_voice_nets_answers_merge_by_speech_and_become_the_rows_arousal():
    heard = np.array([0.1, 0.7, 0.05, 0.05, 0.04, 0.03, 0.03])
    # Two chunks' pieces of one cell: 300 ms of speech answered (valence -0.5, arousal 0.9, no dominance),
    # 500 ms answered (0.3, 0.1); a third piece heard nothing from the net (too short a window).
    a = Evidence(0, 0, 0.0, None, 300, 1.0, 0.2, heard, np.zeros(3), np.array([-0.5, 0.9, np.nan]))
    b = Evidence(0, 0, 0.0, None, 500, 1.0, 0.4, heard, np.zeros(3), np.array([0.3, 0.1, np.nan]))
    c = Evidence(0, 0, 0.0, None, 200, 1.0, 0.6, None, np.zeros(3))
    m = merge([a, b, c])
    np.testing.assert_allclose(m.voice_dims[:2], [(-0.5 * 300 + 0.3 * 500) / 800, (0.9 * 300 + 0.1 * 500) / 800])
    assert np.isnan(m.voice_dims[2])
    f = fuse_evidence(m)
    assert (f.arousal, f.arousal_source) == (pytest.approx(0.4), "voice_net")
    assert m.arousal == pytest.approx((0.2 * 300 + 0.4 * 500 + 0.6 * 200) / 1000)   # the prosodic one, kept
    from pipeline.shared.fusion import explain

    ev = explain(m, f)
    assert ev["voice"]["dimensions"] == {"valence": 0.0, "arousal": 0.4}   # no dominance answered
    assert ev["voice"]["prosodic_arousal"] == pytest.approx(0.38)
    assert "voice: happy 0.70 (valence +0.00, arousal 0.40)" in ev["summary"]
    # Without a dimensional net the arousal is the prosodic one, and says so; silence has none.
    assert (fuse_evidence(merge([c])).arousal_source, fuse_evidence(merge([c])).arousal) == ("prosody", 0.6)
    quiet = Evidence(0, 0, 0.0, None, 1000, 0.0, 0.3, None, None, np.array([0.1, 0.2, 0.3]))
    assert (fuse_evidence(quiet).arousal, fuse_evidence(quiet).arousal_source) == (None, None)


def test_a_dimensional_nets_columns_are_scaled_from_their_declared_ranges():
    from pipeline.model import manifest as mf
    from pipeline.model.nets import scaled_dimensions

    spec = mf.VoiceEmotionNet(file="v.onnx", output="valence_arousal", dimensions=("arousal", "drop", "valence"),
                              valence_range=(0.0, 1.0), arousal_range=(0.0, 2.0))
    d = scaled_dimensions(np.array([[1.0, 9.0, 0.75], [3.0, 9.0, -1.0]]), spec)
    np.testing.assert_allclose(d[:, :2], [[0.5, 0.5], [-1.0, 1.0]])   # valence -1..1, arousal 0..1, clipped
    assert np.isnan(d[:, 2]).all()                                     # no dominance declared
