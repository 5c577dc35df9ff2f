"""Triton Python backend: speech activity per item (pipeline/model/speech.py), with the repository's
built-in Silero VAD (`voice/1/silero_vad.jit`, the emotion model's). No emotion is inferred here.

Every server loads this model, but few deployments measure anyone's talk apart: torch and the VAD
(about 350 MB of the stub's memory) are loaded on the first request, not at start."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.model.backend import instance_device


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"])
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value") for k, v in config.get("parameters", {}).items()}
        self.vad = (folder / params.get("vad", "../voice/1/silero_vad.jit")).resolve()
        if not self.vad.is_file():
            raise FileNotFoundError(f"{self.vad} is missing: run `callstream models build` first")
        self.threshold = float(params.get("speech_threshold", 0.5))
        self.device = instance_device(args)
        self.speech = None

    def _speech(self):
        if self.speech is None:
            from pipeline.model.speech import SpeechActivity

            self.speech = SpeechActivity.load(self.vad, self.device, self.threshold)
        return self.speech

    def execute(self, requests):
        """Each request alone: Silero runs its windows for all of a request's items in one pass, and a
        request whose inputs are wrong fails alone."""
        speech = self._speech()
        responses = []
        for request in requests:
            try:
                audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
                lengths = pb_utils.get_input_tensor_by_name(request, "AUDIO_LEN").as_numpy()
                ratio = speech.ratios(audio, lengths).reshape(-1, 1)
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("SPEECH_RATIO", ratio.astype(np.float32))]))
        return responses
