import numpy as np
import pytest

from pipeline.inference.acoustics import arousal_score, prosody
from pipeline.inference.fusion import FACE_MIN_SCORE, aggregate_face, arousal_prior, fuse
from pipeline.inference.labels import DFEW_LABELS, FER2013_LABELS, FER2013_TO_DFEW, permutation


def test_fer_order_maps_to_dfew_order():
    fer = np.arange(7)  # value i at FER2013 position i
    dfew = fer[FER2013_TO_DFEW]
    assert [FER2013_LABELS[i] for i in dfew] == list(DFEW_LABELS)
    with pytest.raises(ValueError):
        permutation(("a", "b"))


def test_face_aggregation_weights_by_confidence_and_ignores_untrusted():
    probs = np.array([[1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0]], float)
    agg, score = aggregate_face(probs, np.array([0.99, 0.95, 0.5]))
    assert agg[2] == 0 and agg[0] > agg[1] > 0 and np.isclose(agg.sum(), 1)
    assert score == pytest.approx(0.97)
    assert aggregate_face(probs, np.zeros(3)) == (None, 0.0)
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
