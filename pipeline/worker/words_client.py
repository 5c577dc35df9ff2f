"""Async Triton client for the `words` model: one request per participant's stretch of audio."""

from __future__ import annotations

import asyncio

import numpy as np

from pipeline.errors import BadChunk
from pipeline.shared.wire import SAMPLE_RATE
from pipeline.shared.words import Utterance, WireError, from_wire
from pipeline.worker.triton_client import ServedModel


class WordsClient(ServedModel):
    def __init__(self, url: str, model: str = "words") -> None:
        super().__init__(url, model)
        self.version = ""

    async def identity(self) -> str:
        """The version every utterance row carries (the model config's parameter model_version)."""
        config = (await self._client.get_model_config(self.model, as_json=True))["config"]
        self.version = config.get("parameters", {}).get("model_version", {}).get("string_value", self.model)
        return self.version

    async def _one(self, audio: np.ndarray) -> list[Utterance]:
        a = np.ascontiguousarray(audio, np.float32).reshape(1, -1)
        if not a.shape[1]:
            return []
        out = (await self.call({"AUDIO": a, "AUDIO_LEN": np.array([[a.shape[1]]], np.int32)},
                               ("TRANSCRIPT",)))["TRANSCRIPT"]
        try:
            if out is None or out.size != 1:
                raise WireError(f"TRANSCRIPT of shape {None if out is None else out.shape}")
            return from_wire(out.reshape(-1)[0], a.shape[1] / SAMPLE_RATE)
        except WireError as exc:
            raise BadChunk("inference_rejected", f"words model {self.model!r}: {exc}") from None

    async def transcribe(self, audios: list[np.ndarray]) -> list[list[Utterance]]:
        """Each stretch's utterances, times in ms from the stretch's start."""
        return list(await asyncio.gather(*(self._one(a) for a in audios)))
