"""Triton Python backend: per-item face + voice analysis and fusion, all in this process.

The nets are the ones this model's manifest.toml declares (pipeline/model/manifest.py), loaded from
the model repository and run here (pipeline/model/analysis.py): no BLS hop copies frames, crops or
audio to another stub process. One bad request fails alone, never the others the dynamic batcher put
with it. Every installed model version runs this same file (`callstream models add` copies it).
"""

import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipeline.model.analysis import Analyzer, Request
from pipeline.model.backend import instance_device
from pipeline.model.manifest import MANIFEST
from pipeline.model.nets import NetInputError, NetOutputError
from pipeline.model.repository import check_config


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(1)   # one core per instance: the instance count sets the parallelism
        folder = Path(args["model_repository"])
        self.analyzer = Analyzer.from_manifest(folder / MANIFEST, folder.parent, instance_device(args))
        check_config(json.loads(args["model_config"]), self.analyzer.manifest, str(folder))

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

        return Request.of(get("FRAMES"), get("FRAME_MASK"), get("AUDIO"), get("AUDIO_LEN"), get("VOICE_WINDOW"),
                          get("VOICE_LEN"))


def _error(exc):
    # A net that answers this request's media with NaN or the wrong shape, or whose runtime refuses its
    # inputs, will do so again: say so (INVALID_ARG, a permanent fault for the worker), instead of an
    # INTERNAL error that is retried.
    if isinstance(exc, NetOutputError | NetInputError):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
