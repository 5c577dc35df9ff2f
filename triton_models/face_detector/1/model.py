"""Triton Python backend: MTCNN face detection (pipeline/model/face_detection.py)."""

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipeline.model import artifacts
from pipeline.model.backend import instance_device, parameter, version_folder


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(1)
        self.detector = artifacts.detector(version_folder(args), int(parameter(args, "min_face_px", "40")),
                                           instance_device(args))

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
