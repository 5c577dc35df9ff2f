"""Triton Python backend: Silero VAD speech ratio and prosodic arousal (pipeline/model/acoustics.py)."""

import torch
import triton_python_backend_utils as pb_utils

from pipeline.model import artifacts
from pipeline.model.backend import instance_device, parameter, version_folder
from pipeline.model.voice import SPEECH_THRESHOLD, analyse


class TritonPythonModel:
    def initialize(self, args):
        self.device = instance_device(args)
        self.vad = artifacts.vad(version_folder(args), self.device)
        self.threshold = float(parameter(args, "speech_threshold", str(SPEECH_THRESHOLD)))
        torch.set_num_threads(1)

    def execute(self, requests):
        responses = []
        for request in requests:
            audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "AUDIO_LEN").as_numpy().reshape(-1)
            ratio, arousal = analyse(self.vad, audio, lengths, self.threshold, self.device)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("SPEECH_RATIO", ratio[:, None]),
                pb_utils.Tensor("AROUSAL", arousal[:, None]),
            ]))
        return responses
