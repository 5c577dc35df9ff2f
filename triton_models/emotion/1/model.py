"""Triton Python backend: per-item face + voice analysis and fusion, all in this process.

The detector, expression and voice nets are loaded from their own models' version folders and run
here (pipeline/inference/analysis.py): no BLS hop copies frames, crops or audio to another stub
process. One bad request fails alone, never the others the dynamic batcher put with it.
"""

from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipeline.inference.analysis import Analyzer, Request
from pipeline.inference.face_detection import KEYFRAME_EVERY
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
            tracking=parameter(args, "face_tracking", "true").lower() == "true",
            keyframe_every=max(1, int(parameter(args, "face_search_every", str(KEYFRAME_EVERY)))))

    def execute(self, requests):
        """Requests the dynamic batcher put together share the expression and voice passes; one whose
        inputs are inconsistent fails alone, and if the shared pass fails each runs on its own."""
        responses, ok, inputs = [None] * len(requests), [], []
        for k, request in enumerate(requests):
            try:
                inputs.append(self.inputs(request))
                ok.append(k)
            except Exception as exc:
                responses[k] = _error(exc)
        try:
            outputs = self.analyzer.run_many(inputs)
        except Exception:
            outputs = []
            for one in inputs:
                try:
                    outputs.append(self.analyzer.run_many([one])[0])
                except Exception as exc:
                    outputs.append(exc)
        for k, out in zip(ok, outputs, strict=True):
            responses[k] = _error(out) if isinstance(out, Exception) else pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(v)) for name, v in out.items()])
        return responses

    @staticmethod
    def inputs(request):
        def get(name):
            t = pb_utils.get_input_tensor_by_name(request, name)
            return None if t is None else t.as_numpy()

        return Request.of(get("FRAMES"), get("FRAME_MASK"), get("AUDIO"), get("AUDIO_LEN"), get("TRACK"), get("HINT"))


def _error(exc):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
