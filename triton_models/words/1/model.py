"""Triton Python backend: words and their valence per item (pipeline/model/words.py), from the
Whisper folder and valence scorer words.toml beside config.pbtxt declares."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.model.backend import instance_device
from pipeline.model.words import Words
from pipeline.model.words_manifest import WORDS_MANIFEST


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"])
        self.words = Words.from_manifest(folder / WORDS_MANIFEST, folder.parent, instance_device(args))
        config = json.loads(args["model_config"])
        served = config.get("parameters", {}).get("model_version", {}).get("string_value")
        if served != self.words.manifest.model_version:
            raise ValueError(f"{folder}/config.pbtxt: parameter model_version {served!r} is not the manifest's "
                             f"{self.words.manifest.model_version!r}")

    def execute(self, requests):
        """The items of every request the batcher put together are heard in one pass (packed into
        Whisper's 30-s windows); a request whose inputs are wrong fails alone."""
        responses, items, owners = [None] * len(requests), [], []
        for k, request in enumerate(requests):
            try:
                audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
                lengths = pb_utils.get_input_tensor_by_name(request, "AUDIO_LEN").as_numpy()
                mine = self.words.items(audio, lengths)
            except ValueError as exc:
                responses[k] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                continue
            items += mine
            owners += [k] * len(mine)
        try:
            answers = self.words.hear(items)
        except Exception as exc:
            for k in set(owners):
                responses[k] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
            return responses
        for k in sorted(set(owners)):
            out = np.array([[a.encode()] for a, o in zip(answers, owners, strict=True) if o == k], dtype=np.object_)
            responses[k] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TRANSCRIPT", out)])
        return responses
