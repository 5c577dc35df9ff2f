"""Speech activity alone: the share of each item's audio that Silero VAD calls speech, and nothing else.

The `speech` Triton model runs this for participants whose talk time is measured but whose emotions
are not (CALLSTREAM_SPEECH_ACTIVITY_ROLES, agents mostly: docs/COMPLIANCE.md). It holds no face, voice-
emotion or words net, so what it is sent cannot be used to infer an emotion: an auditor reads that here
and in its config, not in the worker's settings. Same VAD file, threshold and windows as the emotion
model's, so an agent's talk seconds and a customer's are measured alike and overlap is comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.model import voice
from pipeline.shared.wire import SAMPLE_RATE

MAX_ITEM_S = 600   # an item is one segment's audio; ten minutes of it is already a malformed request


@dataclass
class SpeechActivity:
    vad: Any
    threshold: float = voice.SPEECH_THRESHOLD
    device: str = "cpu"

    @classmethod
    def load(cls, vad_path: Path, device: str = "cpu", threshold: float = voice.SPEECH_THRESHOLD) -> SpeechActivity:
        """The VAD file alone: artifacts' loader would import every detector and net runner with it."""
        path = Path(vad_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `callstream models build` first")
        return cls(torch.jit.load(str(path), map_location=device).eval(), threshold, device)

    def ratios(self, audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Share of speech per item, of its first `lengths` samples (0 for an item without audio).
        Raises ValueError, with the reason, for inputs no worker sends."""
        if audio.ndim != 2 or lengths.reshape(-1).shape[0] != audio.shape[0]:
            raise ValueError(f"AUDIO of shape {audio.shape} and AUDIO_LEN of shape {lengths.shape} do not match")
        n = lengths.reshape(-1).astype(np.int64)
        if (n < 0).any() or (n > audio.shape[1]).any():
            raise ValueError(f"AUDIO_LEN outside 0..{audio.shape[1]}: {n.tolist()}")
        if audio.shape[1] > MAX_ITEM_S * SAMPLE_RATE:
            raise ValueError(f"items of {audio.shape[1] / SAMPLE_RATE:.0f} s: at most {MAX_ITEM_S} s each")
        if not np.isfinite(audio).all():
            raise ValueError("AUDIO holds NaN or infinite samples")
        out = np.zeros(len(n), np.float32)
        if (n > 0).any():
            out = voice.speech_ratio(self.vad, np.ascontiguousarray(audio, np.float32), n, self.threshold,
                                     self.device)
        return out
