"""Per-item voice analysis shared by the `voice` Triton model and the in-process benchmark limit:
Silero VAD speech ratio over zero-padded items, and prosodic arousal of each item's real samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.model.acoustics import prosody
from pipeline.shared.wire import SAMPLE_RATE

WINDOW = 512  # Silero's window at 16 kHz
SPEECH_THRESHOLD = 0.5  # Silero's own default: a window is speech above this probability


# Silero is stateful, so its windows run one call after another, and each call costs about the same
# for 5 sequences as for 20: an item's audio is cut into runs of this many windows (about 0.5 s),
# run side by side from a fresh state. Items already started from a fresh state every segment.
RUN_WINDOWS = 16


def speech_ratio(vad: Any, audio: np.ndarray, lengths: np.ndarray, threshold: float, device: str = "cpu",
                 run_windows: int = RUN_WINDOWS) -> np.ndarray:
    """Share of each item's own windows that Silero calls speech; padding windows do not count."""
    windows = audio.shape[1] // WINDOW
    if windows == 0:
        return np.zeros(len(audio), np.float32)
    runs = -(-windows // run_windows)
    steps = -(-windows // runs)          # windows per run, the runs as even as possible
    x = np.zeros((len(audio), runs * steps * WINDOW), np.float32)
    x[:, : windows * WINDOW] = audio[:, : windows * WINDOW]
    seqs = torch.from_numpy(x.reshape(len(audio) * runs, steps * WINDOW)).to(device)
    with torch.inference_mode():
        probs = window_probs(vad, seqs).cpu().numpy()
    probs = probs.reshape(len(audio), runs * steps)[:, :windows]
    valid = np.arange(windows)[None, :] < (lengths[:, None] // WINDOW)
    counted = np.maximum(valid.sum(axis=1), 1)
    return (((probs > threshold) & valid).sum(axis=1) / counted).astype(np.float32)


def window_probs(vad: Any, seqs: torch.Tensor) -> torch.Tensor:
    """Silero's speech probability for each 512-sample window of each row, every row from a fresh
    state. Silero 5 and later loop over the windows inside TorchScript (`audio_forward`), without a
    Python round trip per window; an older file takes the windows one call at a time, the same
    computation (tests/model/test_voice.py holds the two equal)."""
    if hasattr(vad, "audio_forward"):
        return vad.audio_forward(seqs, SAMPLE_RATE)
    vad.reset_states()
    steps = seqs.shape[1] // WINDOW
    return torch.stack([vad(seqs[:, i * WINDOW:(i + 1) * WINDOW], SAMPLE_RATE).reshape(-1)
                        for i in range(steps)], dim=1)


def prosodies(audio: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(arousal, cues) per item of its real samples: arousal -1 and cues 0 for items without audio;
    cues are energy, pitch variability and rate as z-scores (acoustics.cue_scores)."""
    arousal = np.full(len(audio), -1.0, np.float32)
    cues = np.zeros((len(audio), 3), np.float32)
    for i, (a, n) in enumerate(zip(audio, lengths, strict=True)):
        if n > 0:
            p = prosody(a[:n])
            arousal[i], cues[i] = p.arousal, p.cues()
    return arousal, cues
