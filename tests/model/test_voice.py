"""Silero VAD as served: its own TorchScript loop over the windows (`audio_forward`) gives exactly the
probabilities of one call per window, so the speech decisions do not depend on which runs them."""

import numpy as np
import torch

from pipeline.model import artifacts, voice
from tests import model_kit


class _Windowed:
    """The same Silero file seen without `audio_forward`, as an older release is: one call per window."""

    def __init__(self, vad):
        self.vad = vad

    def reset_states(self):
        self.vad.reset_states()

    def __call__(self, x, rate):
        return self.vad(x, rate)


def test_silero_on_whole_runs_is_silero_window_by_window(model_repository):
    vad = artifacts.vad(artifacts.version_dir(model_repository, "voice"))
    assert hasattr(vad, "audio_forward")
    rng = np.random.default_rng(0)
    n = 4 * 16 * voice.WINDOW     # four runs of 16 windows per clip, about 2 s
    clips = [model_kit.speech(0.1, 2.5), model_kit.speech(0.02, 2.5),
             (rng.standard_normal(n) * 0.01).astype(np.float32), np.zeros(n, np.float32)]
    audio = np.stack([c[:n] for c in clips])
    seqs = torch.from_numpy(audio.reshape(-1, 16 * voice.WINDOW))    # runs of 16 windows, as served
    with torch.inference_mode():
        looped = voice.window_probs(_Windowed(vad), seqs)
        whole = voice.window_probs(vad, seqs)
    assert whole.shape == looped.shape == (len(seqs), 16)
    np.testing.assert_allclose(whole.numpy(), looped.numpy(), atol=1e-6)
    lengths = np.full(len(audio), audio.shape[1])
    ratios = voice.speech_ratio(vad, audio, lengths, 0.5)
    assert ratios[0] > 0.3 and ratios[3] == 0
    np.testing.assert_array_equal(ratios, voice.speech_ratio(_Windowed(vad), audio, lengths, 0.5))


def test_speech_activity_is_the_emotion_models_speech_ratio_and_refuses_what_no_worker_sends(model_repository):
    """The `speech` model (talk time without emotion) decides speech exactly as the emotion model's VAD does,
    so an agent measured by one and a customer analysed by the other are measured alike."""
    import pytest

    from pipeline.model.analysis import Analyzer, Request
    from pipeline.model.speech import SpeechActivity

    speech = SpeechActivity.load(artifacts.version_dir(model_repository, "voice") / "silero_vad.jit")
    rng = np.random.default_rng(1)
    talk = model_kit.speech(0.1, 3.0)
    half = np.concatenate([np.zeros(24000, np.float32), talk[:24000]])
    clips = [talk, half, (rng.standard_normal(48000) * 0.01).astype(np.float32), np.zeros(48000, np.float32)]
    audio = np.stack(clips)
    lengths = np.array([[48000], [48000], [48000], [0]], np.int32)
    ratios = speech.ratios(audio, lengths)
    assert ratios[0] > 0.6 and 0.25 < ratios[1] < 0.6 and ratios[2] < 0.1 and ratios[3] == 0, ratios
    analyzer = Analyzer.load(model_repository)
    frames = np.zeros((4, 1, 16, 16, 3), np.uint8)
    served = analyzer.voices([Request.of(frames, np.zeros((4, 1), bool), audio, lengths)])[0]
    np.testing.assert_array_equal(ratios, served.ratio)
    for bad, why in (((audio, lengths[:2]), "do not match"), ((audio, lengths + 1), "outside"),
                     ((np.full((1, 100), np.nan, np.float32), np.array([[100]], np.int32)), "NaN")):
        with pytest.raises(ValueError, match=why):
            speech.ratios(*bad)
