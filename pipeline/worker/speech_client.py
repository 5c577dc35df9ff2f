"""Async Triton client for the `speech` model: how much of each item's audio is speech, nothing more."""

from __future__ import annotations

import asyncio

import numpy as np

from pipeline.errors import BadChunk
from pipeline.shared.fusion import MIN_SPEECH_RATIO
from pipeline.worker.triton_client import ServedModel

BATCH = 64   # the model's max_batch_size


class SpeechClient(ServedModel):
    def __init__(self, url: str, model: str = "speech") -> None:
        super().__init__(url, model)
        self.version = ""
        self.min_speech_ratio = MIN_SPEECH_RATIO

    async def identity(self) -> str:
        """The version every speech-activity row carries, and the share of speech that makes a segment
        talk (the config's parameters model_version and min_speech_ratio)."""
        config = (await self._client.get_model_config(self.model, as_json=True))["config"]
        params = config.get("parameters", {})
        self.version = params.get("model_version", {}).get("string_value", self.model)
        self.min_speech_ratio = float(params.get("min_speech_ratio", {}).get("string_value", MIN_SPEECH_RATIO))
        return self.version

    async def _batch(self, audios: list[np.ndarray]) -> list[float]:
        audio = np.zeros((len(audios), max(1, max(len(a) for a in audios))), np.float32)
        lengths = np.zeros((len(audios), 1), np.int32)
        for k, a in enumerate(audios):
            audio[k, :len(a)], lengths[k, 0] = a, len(a)
        out = (await self.call({"AUDIO": audio, "AUDIO_LEN": lengths}, ("SPEECH_RATIO",)))["SPEECH_RATIO"]
        if out is None or out.shape != (len(audios), 1) or not np.isfinite(out).all() or \
                ((out < 0) | (out > 1)).any():
            raise BadChunk("inference_rejected", f"speech model {self.model!r}: SPEECH_RATIO of shape "
                                                 f"{None if out is None else out.shape} for {len(audios)} items")
        return [float(x) for x in out.reshape(-1)]

    async def ratios(self, audios: list[np.ndarray]) -> list[float]:
        """Each item's share of speech, in order; an empty list for no items."""
        batches = [audios[i:i + BATCH] for i in range(0, len(audios), BATCH)]
        done = await asyncio.gather(*(self._batch(b) for b in batches))
        return [r for b in done for r in b]
