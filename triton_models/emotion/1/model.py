"""Triton Python backend (BLS): per-item face + voice fusion, so the worker makes one call per batch.

For each request it sends every real frame to face_detector in one call, every found face to
face_expression in one call, and all items' audio to voice in one call; then fuses per item.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.inference.fusion import MIN_SPEECH_RATIO, faces_per_item, fuse_items
from pipeline.inference.labels import DFEW_LABELS
from pipeline.inference.serving import parameter

DETECTOR_MAX_BATCH = 128


def _call(model, inputs, outputs):
    request = pb_utils.InferenceRequest(
        model_name=model, requested_output_names=outputs,
        inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()])
    response = request.exec()
    if response.has_error():
        raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
    return [pb_utils.get_output_tensor_by_name(response, o).as_numpy() for o in outputs]


class TritonPythonModel:
    def initialize(self, args):
        self.min_speech_ratio = float(parameter(args, "min_speech_ratio", str(MIN_SPEECH_RATIO)))

    def faces(self, frames, mask):
        """Per item: (DFEW probabilities or None, mean detection score)."""
        flat = frames.reshape((-1,) + frames.shape[2:])[mask.reshape(-1)]
        scores = np.zeros(len(flat), np.float32)
        crops = np.zeros((len(flat), 64, 64), np.uint8)
        for start in range(0, len(flat), DETECTOR_MAX_BATCH):
            part = np.ascontiguousarray(flat[start:start + DETECTOR_MAX_BATCH])
            s, c = _call("face_detector", {"IMAGE": part}, ["SCORE", "FACE"])
            scores[start:start + len(part)] = s.reshape(-1)
            crops[start:start + len(part)] = c
        probs = np.zeros((len(flat), len(DFEW_LABELS)), np.float32)
        seen = scores > 0
        if seen.any():
            (probs[seen],) = _call("face_expression", {"FACE": crops[seen]}, ["PROBS"])
        return faces_per_item(probs, scores, mask)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self.run(request))
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def run(self, request):
        frames = pb_utils.get_input_tensor_by_name(request, "FRAMES").as_numpy()
        mask = pb_utils.get_input_tensor_by_name(request, "FRAME_MASK").as_numpy().astype(bool)
        audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, "AUDIO_LEN").as_numpy()
        n = len(frames)
        faces = self.faces(frames, mask) if mask.any() else [(None, 0.0, 0)] * n
        ratio = np.zeros((n, 1), np.float32)
        arousal = np.full((n, 1), -1.0, np.float32)
        if (lengths > 0).any():
            ratio, arousal = _call("voice", {"AUDIO": np.ascontiguousarray(audio, np.float32),
                                             "AUDIO_LEN": lengths.astype(np.int32)},
                                   ["SPEECH_RATIO", "AROUSAL"])
        out = {k: [] for k in ("PROBS", "CONFIDENCE", "FACE_FOUND", "SPEECH_FOUND", "FACE_SCORE",
                               "FACE_PROBS", "FACE_COUNT")}
        zeros = np.zeros(len(DFEW_LABELS))
        fused_items = fuse_items(faces, ratio, arousal, self.min_speech_ratio)
        for (face_probs, face_score, face_count), fused in zip(faces, fused_items, strict=True):
            out["PROBS"].append(fused.probs if fused.probs is not None else zeros)
            out["CONFIDENCE"].append([fused.confidence])
            out["FACE_FOUND"].append([fused.face_found])
            out["SPEECH_FOUND"].append([fused.speech_found])
            out["FACE_SCORE"].append([face_score])
            # The face evidence before fusion: pieces of one grid cell from two chunks merge from these.
            out["FACE_PROBS"].append(face_probs if face_probs is not None else zeros)
            out["FACE_COUNT"].append([face_count])
        dtypes = {"PROBS": np.float32, "CONFIDENCE": np.float32, "FACE_FOUND": bool,
                  "SPEECH_FOUND": bool, "FACE_SCORE": np.float32, "FACE_PROBS": np.float32, "FACE_COUNT": np.int32}
        tensors = [pb_utils.Tensor(k, np.asarray(v, dtype=dtypes[k])) for k, v in out.items()]
        tensors += [pb_utils.Tensor("AROUSAL", arousal.astype(np.float32)),
                    pb_utils.Tensor("SPEECH_RATIO", ratio.astype(np.float32))]
        return pb_utils.InferenceResponse(output_tensors=tensors)
