"""The whole per-item analysis in one process: face detection, expression, voice, fusion.

The `emotion` Triton model runs this directly instead of calling three other models over BLS: every
BLS hop copied each request's frames, crops and audio into another stub process and back, and on a
CPU server those copies and the extra processes cost as much as a model. The benchmark's bare limit
runs the same object, so the two measure the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.inference import artifacts, voice
from pipeline.inference.face_detection import MTCNN
from pipeline.inference.fusion import MIN_SPEECH_RATIO, FaceAggregate, faces_per_item, fuse_items
from pipeline.inference.labels import DFEW_LABELS

OUTPUT_DTYPES = {"PROBS": np.float32, "CONFIDENCE": np.float32, "FACE_FOUND": bool, "SPEECH_FOUND": bool,
                 "FACE_SCORE": np.float32, "AROUSAL": np.float32, "SPEECH_RATIO": np.float32,
                 "FACE_PROBS": np.float32, "FACE_COUNT": np.int32}


@dataclass
class Analyzer:
    detector: MTCNN
    expression: Any
    vad: Any
    speech_threshold: float = voice.SPEECH_THRESHOLD
    min_speech_ratio: float = MIN_SPEECH_RATIO
    tracking: bool = True
    vad_run_windows: int = voice.RUN_WINDOWS
    device: str = "cpu"

    @classmethod
    def load(cls, repo: Path, min_face: int = 40, device: str = "cpu", **kw: Any) -> Analyzer:
        """The nets of a model repository (each kept in its own model's version folder)."""
        return cls(artifacts.detector(artifacts.version_dir(repo, "face_detector"), min_face, device),
                   artifacts.expression(artifacts.version_dir(repo, "face_expression"), device),
                   artifacts.vad(artifacts.version_dir(repo, "voice"), device), device=device, **kw)

    def faces(self, frames: np.ndarray, mask: np.ndarray, tracks: np.ndarray | None) -> list[FaceAggregate]:
        """Per item: (DFEW probabilities summed over its faces or None, mean detection score, faces)."""
        flat = frames.reshape((-1,) + frames.shape[2:])[mask.reshape(-1)]
        per_frame = None
        if self.tracking:
            # Frames of one view in time order: the item's track (the caller's view id), else the item.
            ids = tracks.reshape(-1) if tracks is not None else np.arange(len(frames))
            per_frame = np.repeat(ids, mask.shape[1]).reshape(mask.shape)[mask]
        found = self.detector.detect(np.ascontiguousarray(flat), per_frame)
        probs = np.zeros((len(flat), len(DFEW_LABELS)), np.float32)
        seen = found.scores > 0
        if seen.any():
            with torch.inference_mode():
                probs[seen] = self.expression(torch.from_numpy(found.crops[seen]).to(self.device)).cpu().numpy()
        return faces_per_item(probs, found.scores, mask)

    def run(self, frames: np.ndarray, mask: np.ndarray, audio: np.ndarray, lengths: np.ndarray,
            tracks: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The `emotion` model's outputs for one request (see its config.pbtxt)."""
        n = len(frames)
        mask = mask.astype(bool)
        lengths = lengths.reshape(-1)
        faces: list[FaceAggregate] = self.faces(frames, mask, tracks) if mask.any() else [(None, 0.0, 0)] * n
        ratio = np.zeros(n, np.float32)
        arousal = np.full(n, -1.0, np.float32)
        if (lengths > 0).any():
            ratio, arousal = voice.analyse(self.vad, audio, lengths, self.speech_threshold, self.device,
                                           self.vad_run_windows)
        zeros = np.zeros(len(DFEW_LABELS))
        out: dict[str, list] = {k: [] for k in OUTPUT_DTYPES}
        for (face_probs, face_score, face_count), fused in zip(
                faces, fuse_items(faces, ratio, arousal, self.min_speech_ratio), strict=True):
            out["PROBS"].append(fused.probs if fused.probs is not None else zeros)
            out["CONFIDENCE"].append([fused.confidence])
            out["FACE_FOUND"].append([fused.face_found])
            out["SPEECH_FOUND"].append([fused.speech_found])
            out["FACE_SCORE"].append([face_score])
            # The face evidence before fusion: pieces of one grid cell from two chunks merge from these.
            out["FACE_PROBS"].append(face_probs if face_probs is not None else zeros)
            out["FACE_COUNT"].append([face_count])
        out["AROUSAL"] = arousal.reshape(-1, 1).tolist()
        out["SPEECH_RATIO"] = ratio.reshape(-1, 1).tolist()
        return {k: np.asarray(v, dtype=OUTPUT_DTYPES[k]).reshape(n, -1) for k, v in out.items()}
