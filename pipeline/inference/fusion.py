"""Fusing face and voice into one DFEW distribution per (participant, segment).

The face model recognises expressions; the voice only gives arousal (see acoustics.py). So the face
decides the label when a face is seen, and arousal tilts it mildly (a weighted product of experts).
With speech but no face, the result is an arousal prior flattened towards uniform, flagged by its
modality and low confidence. With neither, there is no result: no made-up emotion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.inference.labels import DFEW_AROUSAL, DFEW_LABELS

FACE_MIN_SCORE = 0.9      # MTCNN output-stage confidence below this is not trusted as a face
VOICE_WEIGHT = 0.3        # exponent of the arousal prior when a face is present
PRIOR_WIDTH = 0.25        # s.d. of the Gaussian around each label's arousal
MIN_SPEECH_RATIO = 0.2    # a segment has speech when at least this share of its windows is speech
VOICE_ONLY_MIX = 0.5      # voice-only results are half uniform: arousal is weak evidence of a label


@dataclass(frozen=True)
class Fused:
    """One (participant, segment) result: what the model serves and what the worker stores."""
    probs: np.ndarray | None   # (7,) DFEW order, None when nothing was observed
    label: str | None
    confidence: float
    face_found: bool
    speech_found: bool
    modality: str              # 'face+voice', 'face', 'voice' or 'none'
    face_score: float = 0.0    # mean face-detection confidence (set where the detector ran)
    arousal: float | None = None
    speech_ratio: float = 0.0

    @staticmethod
    def modality_of(face_found: bool, speech_found: bool) -> str:
        return {(True, True): "face+voice", (True, False): "face", (False, True): "voice"}.get(
            (face_found, speech_found), "none")


def aggregate_face(probs: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Mean of per-frame probabilities weighted by detection confidence, over trusted detections."""
    probs, scores = np.asarray(probs, np.float64), np.asarray(scores, np.float64)
    trusted = scores >= FACE_MIN_SCORE
    if not trusted.any():
        return None, 0.0
    w = scores[trusted]
    return (probs[trusted] * w[:, None]).sum(axis=0) / w.sum(), float(w.mean())


def arousal_prior(arousal: float) -> np.ndarray:
    d = np.asarray(DFEW_AROUSAL) - arousal
    p = np.exp(-0.5 * (d / PRIOR_WIDTH) ** 2)
    return p / p.sum()


def fuse(face_probs: np.ndarray | None, speech_found: bool, arousal: float | None) -> Fused:
    face_found = face_probs is not None
    voice = arousal if speech_found else None
    if face_probs is not None and voice is not None:
        p = np.asarray(face_probs) * arousal_prior(voice) ** VOICE_WEIGHT
        modality = "face+voice"
    elif face_probs is not None:
        p = np.asarray(face_probs, np.float64)
        modality = "face"
    elif voice is not None:
        p = VOICE_ONLY_MIX * arousal_prior(voice) + (1 - VOICE_ONLY_MIX) / len(DFEW_LABELS)
        modality = "voice"
    else:
        return Fused(None, None, 0.0, False, speech_found, "none")
    p = p / p.sum()
    best = int(np.argmax(p))
    return Fused(p, DFEW_LABELS[best], float(p[best]), face_found, speech_found, modality)


def faces_per_item(probs: np.ndarray, scores: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray | None, float]]:
    """Aggregate per-frame results back to their items. `mask` (items x frames) marks the real frames;
    `probs` and `scores` hold one row per real frame, in mask order."""
    n_items, n_frames = mask.shape
    owner = np.repeat(np.arange(n_items), n_frames)[mask.reshape(-1)]
    return [aggregate_face(probs[owner == i], scores[owner == i]) for i in range(n_items)]


def fuse_items(faces: list[tuple[np.ndarray | None, float]], speech_ratio: np.ndarray, arousal: np.ndarray,
               min_speech_ratio: float) -> list[Fused]:
    out = []
    for (face_probs, _), ratio, ar in zip(faces, speech_ratio.reshape(-1), arousal.reshape(-1), strict=True):
        speech = bool(ratio >= min_speech_ratio)
        out.append(fuse(face_probs, speech, float(ar) if speech else None))
    return out
