"""VAD runs: cutting items into runs of windows must keep every window in its place and count only
an item's own windows (the reshaping is checked with a stateless stand-in for Silero)."""

import numpy as np

from pipeline.model.voice import WINDOW, speech_ratio


class LoudWindows:
    """Speech wherever a window's mean amplitude is above 0.1; records the batch of each call."""

    def __init__(self):
        self.batches = []

    def reset_states(self):
        pass

    def __call__(self, x, rate):
        self.batches.append(len(x))
        return (x.abs().mean(dim=1) > 0.1).float()[:, None]


def test_runs_count_the_same_windows_as_whole_items():
    rng = np.random.default_rng(0)
    windows = 37
    audio = np.zeros((3, windows * WINDOW + 100), np.float32)
    loud = rng.random((3, windows)) < 0.4
    for i in range(3):
        for w in np.flatnonzero(loud[i]):
            audio[i, w * WINDOW:(w + 1) * WINDOW] = 0.5
    lengths = np.array([windows * WINDOW + 100, 20 * WINDOW, 0])
    whole, runs = LoudWindows(), LoudWindows()
    expected = speech_ratio(whole, audio, lengths, 0.5, run_windows=1000)
    got = speech_ratio(runs, audio, lengths, 0.5, run_windows=16)
    assert np.allclose(got, expected)
    assert expected[0] == np.float32(loud[0].mean()) and expected[1] == np.float32(loud[1, :20].mean())
    assert expected[2] == 0
    assert len(whole.batches) == windows and len(runs.batches) == 13 and runs.batches[0] == 9


def test_no_whole_window_no_speech():
    assert speech_ratio(LoudWindows(), np.ones((2, WINDOW - 1), np.float32), np.array([10, 0]), 0.5).tolist() == [0, 0]

