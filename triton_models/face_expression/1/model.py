"""Triton Python backend: the built-in expression net alone, DFEW-ordered probabilities.

Fed and read as the `emotion` model's manifest declares its first face net (uint8 64x64 gray crops in).
"""

from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipeline.model import manifest as mf
from pipeline.model.backend import instance_device
from pipeline.model.nets import FaceExpression


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(1)
        repo = Path(args["model_repository"]).parent
        path = repo / "emotion" / mf.MANIFEST
        spec = mf.load(path).face[0]
        self.net = FaceExpression.load(spec, mf.resolve(path.parent, spec.file, repo, "face[0].file"),
                                       instance_device(args))

    def execute(self, requests):
        faces = [pb_utils.get_input_tensor_by_name(r, "FACE").as_numpy() for r in requests]
        # One forward pass for everything the dynamic batcher handed us, split back per request.
        probs = self.net.probs(np.concatenate(faces))
        responses, start = [], 0
        for f in faces:
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("PROBS", probs[start:start + len(f)].astype(np.float32))]))
            start += len(f)
        return responses
