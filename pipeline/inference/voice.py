"""Per-item voice analysis shared by the `voice` Triton model and the in-process benchmark limit:
Silero VAD speech ratio over zero-padded items, and prosodic arousal of each item's real samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.inference.acoustics import SAMPLE_RATE, prosody

WINDOW = 512  # Silero's window at 16 kHz
SPEECH_THRESHOLD = 0.5  # Silero's own default: a window is speech above this probability


def speech_ratio(vad: Any, audio: np.ndarray, lengths: np.ndarray, threshold: float, device: str = "cpu") -> np.ndarray:
    """Share of each item's own windows that Silero calls speech; padding windows do not count."""
    windows = audio.shape[1] // WINDOW
    if windows == 0:
        return np.zeros(len(audio), np.float32)
    x = torch.from_numpy(np.ascontiguousarray(audio[:, : windows * WINDOW], np.float32)).to(device)
    with torch.inference_mode():
        vad.reset_states()
        probs = torch.stack([vad(x[:, i * WINDOW:(i + 1) * WINDOW], SAMPLE_RATE).reshape(-1)
                             for i in range(windows)], dim=1).cpu().numpy()
    valid = np.arange(windows)[None, :] < (lengths[:, None] // WINDOW)
    counted = np.maximum(valid.sum(axis=1), 1)
    return (((probs > threshold) & valid).sum(axis=1) / counted).astype(np.float32)


def analyse(vad: Any, audio: np.ndarray, lengths: np.ndarray, threshold: float,
            device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(speech ratio, arousal) per item; arousal is -1 for items without audio."""
    ratio = speech_ratio(vad, audio, lengths, threshold, device)
    arousal = np.array([prosody(a[:n]).arousal if n > 0 else -1.0
                        for a, n in zip(audio, lengths, strict=True)], np.float32)
    return ratio, arousal
