"""Triton Python backend: MTCNN face detection (pipeline/inference/face_detection.py)."""

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipeline.inference.face_detection import MTCNN
from pipeline.inference.serving import artifact, instance_device, parameter


class TritonPythonModel:
    def initialize(self, args):
        device = instance_device(args)
        nets = [torch.jit.load(str(artifact(args, f"{n}.pt")), map_location=device).eval()
                for n in ("pnet", "rnet", "onet")]
        torch.set_num_threads(1)
        self.detector = MTCNN(*nets, min_face=int(parameter(args, "min_face_px", "40")), device=device)

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            found = self.detector.detect(np.ascontiguousarray(images))
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("BOX", found.boxes.astype(np.float32)),
                pb_utils.Tensor("SCORE", found.scores.astype(np.float32)[:, None]),
                pb_utils.Tensor("FACE", found.crops),
            ]))
        return responses
