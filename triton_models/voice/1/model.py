"""Triton Python backend: Silero VAD speech ratio and prosodic arousal (pipeline/inference/acoustics.py)."""

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipeline.inference.acoustics import SAMPLE_RATE, prosody
from pipeline.inference.serving import artifact, instance_device, parameter

WINDOW = 512  # Silero's window at 16 kHz


class TritonPythonModel:
    def initialize(self, args):
        self.device = instance_device(args)
        self.vad = torch.jit.load(str(artifact(args, "silero_vad.jit")), map_location=self.device).eval()
        self.threshold = float(parameter(args, "speech_threshold", "0.5"))
        torch.set_num_threads(1)

    def speech_ratio(self, audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        windows = audio.shape[1] // WINDOW
        if windows == 0:
            return np.zeros(len(audio), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(audio[:, : windows * WINDOW])).to(self.device)
        with torch.inference_mode():
            self.vad.reset_states()
            probs = torch.stack([self.vad(x[:, i * WINDOW:(i + 1) * WINDOW], SAMPLE_RATE).reshape(-1)
                                 for i in range(windows)], dim=1).cpu().numpy()
        valid = np.arange(windows)[None, :] < (lengths[:, None] // WINDOW)
        counted = np.maximum(valid.sum(axis=1), 1)
        return (((probs > self.threshold) & valid).sum(axis=1) / counted).astype(np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "AUDIO_LEN").as_numpy().reshape(-1)
            ratio = self.speech_ratio(audio, lengths)
            arousal = np.array([prosody(a[:n]).arousal if n > 0 else -1.0 for a, n in zip(audio, lengths)],
                               dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("SPEECH_RATIO", ratio[:, None]),
                pb_utils.Tensor("AROUSAL", arousal[:, None]),
            ]))
        return responses
