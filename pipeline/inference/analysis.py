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
from pipeline.inference.face_detection import KEYFRAME_EVERY, MTCNN, Detections, TrackState
from pipeline.inference.fusion import MIN_SPEECH_RATIO, FaceAggregate, faces_per_item, fuse_items
from pipeline.inference.labels import DFEW_LABELS

OUTPUT_DTYPES = {"PROBS": np.float32, "CONFIDENCE": np.float32, "FACE_FOUND": bool, "SPEECH_FOUND": bool,
                 "FACE_SCORE": np.float32, "AROUSAL": np.float32, "SPEECH_RATIO": np.float32,
                 "FACE_PROBS": np.float32, "FACE_COUNT": np.int32, "TRACK_STATE": np.float32}
NO_STATE = np.zeros(5, np.float32)


@dataclass
class Analyzer:
    detector: MTCNN
    expression: Any
    vad: Any
    speech_threshold: float = voice.SPEECH_THRESHOLD
    min_speech_ratio: float = MIN_SPEECH_RATIO
    tracking: bool = True
    vad_run_windows: int = voice.RUN_WINDOWS
    keyframe_every: int = KEYFRAME_EVERY
    device: str = "cpu"

    @classmethod
    def load(cls, repo: Path, min_face: int = 40, device: str = "cpu", **kw: Any) -> Analyzer:
        """The nets of a model repository (each kept in its own model's version folder)."""
        return cls(artifacts.detector(artifacts.version_dir(repo, "face_detector"), min_face, device),
                   artifacts.expression(artifacts.version_dir(repo, "face_expression"), device),
                   artifacts.vad(artifacts.version_dir(repo, "voice"), device), device=device, **kw)

    def detect(self, r: Request) -> tuple[Detections, dict[int, TrackState]]:
        """Each real frame's most confident face, followed per view when tracking is on, going on from
        the views' carried states (HINT); the views' states after this request."""
        if not r.mask.any():
            return Detections.empty(0), {}
        flat = r.frames.reshape((-1,) + r.frames.shape[2:])[r.mask.reshape(-1)]
        if not self.tracking:
            return self.detector.search(np.ascontiguousarray(flat)), {}
        per_frame = np.repeat(r.view_ids(), r.mask.shape[1]).reshape(r.mask.shape)[r.mask]
        return self.detector.track(np.ascontiguousarray(flat), per_frame, self.keyframe_every, r.carried())

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

    def run_chained(self, batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One call's requests in order, each going on from the views' states the one before returned,
        as the worker chains a call's chunks (benchmarks and the agreement check)."""
        outputs: list[dict[str, np.ndarray]] = []
        states: dict[int, np.ndarray] = {}
        for t in batches:
            r = Request.of(t["FRAMES"], t["FRAME_MASK"], t["AUDIO"], t["AUDIO_LEN"], t.get("TRACK"),
                           carry_states(t.get("TRACK"), states))
            out = self.run_many([r])[0]
            states = dict(zip(r.view_ids().tolist(), out["TRACK_STATE"], strict=True))
            outputs.append(out)
        return outputs

    def run_many(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        """Outputs for requests the dynamic batcher put together: detection per request (frames of
        different requests may differ in size), expression and voice in one pass for all."""
        tracked = [self.detect(r) for r in requests]
        found = [d for d, _ in tracked]
        probs = self.expressions(found)
        voices = self.voices(requests)
        return [self._outputs(faces_per_item(p, d.scores, r.mask), ratio, arousal, r.states_out(states))
                for r, (d, states), p, (ratio, arousal) in zip(requests, tracked, probs, voices, strict=True)]

    def _outputs(self, faces: list[FaceAggregate], ratio: np.ndarray, arousal: np.ndarray,
                 states: np.ndarray) -> dict[str, np.ndarray]:
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
        out["TRACK_STATE"] = states.tolist()
        return {k: np.asarray(v, dtype=OUTPUT_DTYPES[k]).reshape(n, -1) for k, v in out.items()}


@dataclass
class Request:
    """One request's inputs, checked: every later step may index them without surprises."""
    frames: np.ndarray
    mask: np.ndarray
    audio: np.ndarray
    lengths: np.ndarray
    tracks: np.ndarray | None
    hints: np.ndarray | None = None   # (N, 5): a view's TrackState (x1, y1, x2, y2, frames) before this request

    @classmethod
    def of(cls, frames: Any, mask: Any, audio: Any, lengths: Any, tracks: Any = None, hints: Any = None) -> Request:
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
        if hints is not None:
            hints = np.asarray(hints, np.float32).reshape(n, -1) if np.size(hints) == 5 * n else None
            if hints is None:
                raise ValueError(f"HINT must hold 5 values for each of the {n} items")
            # Untrusted numbers: anything not finite means no hint; boxes far outside any frame stay outside.
            hints = np.clip(np.nan_to_num(hints, nan=0.0, posinf=0.0, neginf=0.0), -1e5, 1e5)
        return cls(frames, mask, audio, lengths, tracks, hints)

    def view_ids(self) -> np.ndarray:
        """Each item's view: its TRACK (the caller's view id), else the item itself."""
        return self.tracks if self.tracks is not None else np.arange(len(self.frames))

    def carried(self) -> dict[int, TrackState]:
        """Each view's state from the first of its items that carries a usable one. A hint is only
        where to look first: the output stage must still find a face there, so a wrong or hostile
        hint costs a search, never a face that is not in the frame."""
        out: dict[int, TrackState] = {}
        if self.hints is None:
            return out
        for t, h in zip(self.view_ids().tolist(), self.hints, strict=True):
            if t not in out:
                state = TrackState((float(h[0]), float(h[1]), float(h[2]), float(h[3])), int(max(h[4], 0)))
                if state.usable():
                    out[t] = state
        return out

    def states_out(self, states: dict[int, TrackState]) -> np.ndarray:
        """TRACK_STATE: each item's view's state after this request (zeros: none to carry)."""
        rows = [np.array([*states[t].box, states[t].frames], np.float32) if t in states else NO_STATE
                for t in self.view_ids().tolist()]
        return np.stack(rows) if rows else np.zeros((0, 5), np.float32)


def carry_states(tracks: np.ndarray | None, states: dict[int, np.ndarray]) -> np.ndarray | None:
    """HINT for a request: each item gets its view's state (the model takes the first usable one)."""
    if tracks is None or not states:
        return None
    return np.array([states.get(t, NO_STATE) for t in np.asarray(tracks).reshape(-1).tolist()],
                    np.float32).reshape(-1, 5)
