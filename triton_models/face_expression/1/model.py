"""Triton Python backend: fer's mini-Xception as TorchScript, DFEW-ordered probabilities."""

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipeline.inference import artifacts
from pipeline.inference.serving import instance_device, version_folder


class TritonPythonModel:
    def initialize(self, args):
        self.device = instance_device(args)
        self.net = artifacts.expression(version_folder(args), self.device)
        torch.set_num_threads(1)

    def execute(self, requests):
        faces = [pb_utils.get_input_tensor_by_name(r, "FACE").as_numpy() for r in requests]
        # One forward pass for everything the dynamic batcher handed us, split back per request.
        with torch.inference_mode():
            probs = self.net(torch.from_numpy(np.concatenate(faces)).to(self.device)).cpu().numpy()
        responses, start = [], 0
        for f in faces:
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("PROBS", probs[start:start + len(f)].astype(np.float32))]))
            start += len(f)
        return responses
