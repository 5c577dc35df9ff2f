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
from pipeline.inference.face_detection import MTCNN, Detections
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

    def detect(self, frames: np.ndarray, mask: np.ndarray, tracks: np.ndarray | None) -> Detections:
        """Each real frame's most confident face, followed per view when tracking is on."""
        flat = frames.reshape((-1,) + frames.shape[2:])[mask.reshape(-1)]
        per_frame = None
        if self.tracking:
            # Frames of one view in time order: the item's track (the caller's view id), else the item.
            ids = tracks.reshape(-1) if tracks is not None else np.arange(len(frames))
            per_frame = np.repeat(ids, mask.shape[1]).reshape(mask.shape)[mask]
        return self.detector.detect(np.ascontiguousarray(flat), per_frame)

    def expressions(self, found: list[Detections]) -> list[np.ndarray]:
        """DFEW probabilities per frame (zeros where no face), one forward pass for all requests."""
        crops = [d.crops[d.scores > 0] for d in found]
        probs = [np.zeros((len(d.scores), len(DFEW_LABELS)), np.float32) for d in found]
        if sum(len(c) for c in crops):
            with torch.inference_mode():
                out = self.expression(torch.from_numpy(np.concatenate(crops)).to(self.device)).cpu().numpy()
            start = 0
            for d, c, p in zip(found, crops, probs, strict=True):
                p[d.scores > 0] = out[start:start + len(c)]
                start += len(c)
        return probs

    def voices(self, requests: list[Request]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(speech ratio, arousal) per item of each request; Silero's sequential windows are run once
        for the items of all requests together, which costs about what one request's run does."""
        lengths = [r.lengths.reshape(-1) for r in requests]
        longest = max((r.audio.shape[1] for r in requests), default=0)
        audio = np.zeros((sum(len(n) for n in lengths), longest), np.float32)
        row = 0
        for r, n in zip(requests, lengths, strict=True):
            audio[row:row + len(n), :r.audio.shape[1]] = r.audio
            row += len(n)
        every = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        ratio = np.zeros(len(every), np.float32)
        arousal = np.full(len(every), -1.0, np.float32)
        if (every > 0).any():
            ratio, arousal = voice.analyse(self.vad, audio, every, self.speech_threshold, self.device,
                                           self.vad_run_windows)
        out, row = [], 0
        for n in lengths:
            out.append((ratio[row:row + len(n)], arousal[row:row + len(n)]))
            row += len(n)
        return out

    def run(self, frames: np.ndarray, mask: np.ndarray, audio: np.ndarray, lengths: np.ndarray,
            tracks: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The `emotion` model's outputs for one request (see its config.pbtxt)."""
        return self.run_many([Request.of(frames, mask, audio, lengths, tracks)])[0]

    def run_many(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        """Outputs for requests the dynamic batcher put together: detection per request (frames of
        different requests may differ in size), expression and voice in one pass for all."""
        found = [self.detect(r.frames, r.mask, r.tracks) if r.mask.any() else Detections.empty(0) for r in requests]
        probs = self.expressions(found)
        voices = self.voices(requests)
        return [self._outputs(faces_per_item(p, d.scores, r.mask), ratio, arousal)
                for r, d, p, (ratio, arousal) in zip(requests, found, probs, voices, strict=True)]

    def _outputs(self, faces: list[FaceAggregate], ratio: np.ndarray, arousal: np.ndarray) -> dict[str, np.ndarray]:
        n = len(faces)
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


@dataclass
class Request:
    """One request's inputs, checked: every later step may index them without surprises."""
    frames: np.ndarray
    mask: np.ndarray
    audio: np.ndarray
    lengths: np.ndarray
    tracks: np.ndarray | None

    @classmethod
    def of(cls, frames: Any, mask: Any, audio: Any, lengths: Any, tracks: Any = None) -> Request:
        frames, mask = np.asarray(frames), np.asarray(mask).astype(bool)
        audio, lengths = np.asarray(audio, np.float32), np.asarray(lengths).reshape(-1).astype(np.int64)
        n = len(frames)
        if frames.ndim != 5 or mask.shape != frames.shape[:2] or audio.ndim != 2 or len(audio) != n \
                or len(lengths) != n:
            raise ValueError(f"inconsistent inputs: FRAMES {frames.shape}, FRAME_MASK {mask.shape}, "
                             f"AUDIO {audio.shape}, AUDIO_LEN {lengths.shape}")
        if (lengths < 0).any() or (lengths > audio.shape[1]).any():
            raise ValueError(f"AUDIO_LEN outside 0..{audio.shape[1]}")
        if tracks is not None:
            tracks = np.asarray(tracks).reshape(-1)
            if len(tracks) != n:
                raise ValueError(f"TRACK has {len(tracks)} values for {n} items")
        return cls(frames, mask, audio, lengths, tracks)

