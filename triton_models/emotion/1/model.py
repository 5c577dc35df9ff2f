"""Triton Python backend: per-item face + voice analysis and fusion, all in this process.

The detector, expression and voice nets are loaded from their own models' version folders and run
here (pipeline/inference/analysis.py): no BLS hop copies frames, crops or audio to another stub
process. One bad request fails alone, never the others the dynamic batcher put with it.
"""

from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipeline.inference.analysis import Analyzer
from pipeline.inference.fusion import MIN_SPEECH_RATIO
from pipeline.inference.serving import instance_device, parameter
from pipeline.inference.voice import SPEECH_THRESHOLD


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(1)   # one core per instance: the instance count sets the parallelism
        repo = Path(args["model_repository"]).parent
        self.analyzer = Analyzer.load(
            repo, int(parameter(args, "min_face_px", "40")), instance_device(args),
            speech_threshold=float(parameter(args, "speech_threshold", str(SPEECH_THRESHOLD))),
            min_speech_ratio=float(parameter(args, "min_speech_ratio", str(MIN_SPEECH_RATIO))),
            tracking=parameter(args, "face_tracking", "true").lower() == "true")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self.run(request))
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def run(self, request):
        def get(name):
            t = pb_utils.get_input_tensor_by_name(request, name)
            return None if t is None else t.as_numpy()

        tracks = get("TRACK")
        out = self.analyzer.run(get("FRAMES"), get("FRAME_MASK"), get("AUDIO"), get("AUDIO_LEN"),
                                None if tracks is None else tracks.reshape(-1))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, np.ascontiguousarray(v))
                                                         for k, v in out.items()])
