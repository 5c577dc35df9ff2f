"""Fusing face and voice into one DFEW distribution per (participant, segment).

The modalities present are pooled log-linearly (a weighted product of experts, the weights from the
model's manifest). The voice is one of two things. With a voice-emotion net in the manifest it is that
net's distribution: a voice-only segment gets the net's label, a face+voice segment both. Without one,
the voice only gives arousal (see acoustics.py): the face decides the label when a face is seen and
arousal tilts it mildly; with speech but no face, the result is an arousal prior flattened towards
uniform, flagged by its modality and low confidence. With neither, there is no result: no made-up emotion.

Words (the `words` model, where a worker runs it) add the valence of what was said in the segment: a
prior over the labels' valence on the same circumplex, multiplied into the voice's (the arousal prior,
or beside a voice net's distribution), weighted by `words_weight`. With the arousal it places a
voice-only segment on the circumplex, so a level "this is terrible" reads sad and an excited one angry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.shared.labels import DFEW_AROUSAL, DFEW_LABELS, DFEW_VALENCE

FACE_MIN_SCORE = 0.9      # MTCNN output-stage confidence below this is not trusted as a face (its detector
                          # tells analysis its own bar: BlazeFace reports only faces it trusts)
VOICE_WEIGHT = 0.3        # exponent of the arousal prior when a face is present
PRIOR_WIDTH = 0.25        # s.d. of the Gaussian around each label's arousal
VALENCE_WIDTH = 0.25      # s.d. around each label's valence, as sharp as the arousal prior: clear words decide the half
MIN_SPEECH_RATIO = 0.2    # a segment has speech when at least this share of its windows is speech
VOICE_ONLY_MIX = 0.5      # voice-only results are half uniform: arousal is weak evidence of a label


@dataclass(frozen=True)
class FusionParams:
    """How one model version fuses: the manifest's [fusion] table and its voice.min_speech_ratio.
    Served in the model's config (parameter `fusion`), so workers fuse merged pieces as the model fuses items."""
    face_weight: float = 1.0
    voice_weight: float = 1.0              # exponent of the voice-emotion net's distribution
    arousal_weight: float = VOICE_WEIGHT   # exponent of the arousal prior beside a face (no voice net)
    voice_only_mix: float = VOICE_ONLY_MIX
    min_speech_ratio: float = MIN_SPEECH_RATIO
    words_weight: float = 1.0              # exponent of the words' valence prior (0: words do not move labels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FusionParams:
        known = {k: float(v) for k, v in json.loads(text).items() if k in cls.__dataclass_fields__}
        return cls(**known)


DEFAULT_FUSION = FusionParams()


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
    arousal_source: str | None = None   # 'voice_net' (a dimensional voice net's) or 'prosody'
    speech_ratio: float = 0.0

    @staticmethod
    def modality_of(face_found: bool, speech_found: bool) -> str:
        return {(True, True): "face+voice", (True, False): "face", (False, True): "voice"}.get(
            (face_found, speech_found), "none")


@dataclass(frozen=True)
class Evidence:
    """What one piece of media showed of one participant, in sums that merge exactly: the pieces of a
    grid cell (from two chunks, or from an audio and a video chunk) merge into the evidence the whole
    cell would have given the face path, and into a duration-weighted voice estimate."""
    frames: int                     # sampled frames
    faces: int                      # frames with a trusted face
    face_weight: float              # sum of trusted detection scores
    face_probs: np.ndarray | None   # (7,) score-weighted mean over trusted faces; None without any
    audio_ms: int                   # audio analysed
    speech_ratio: float             # share of that audio that is speech
    arousal: float | None           # prosodic arousal of the audio, where it has speech
    voice_probs: np.ndarray | None = None   # (7,) the voice-emotion net's, where it ran (speech present)
    cues: np.ndarray | None = None          # (3,) energy, pitch variability, rate z-scores behind the arousal
    voice_dims: np.ndarray | None = None    # (3,) a dimensional voice net's valence, arousal, dominance (NaN:
                                            # a dimension it does not answer), where it ran
    word_ms: int = 0                        # time of the words said in the piece (shared/words.py places them)
    word_valence: float | None = None       # their valence, -1..1, where words were said

    @property
    def face_score(self) -> float:
        return self.face_weight / self.faces if self.faces else 0.0


def _by_speech(held: list[tuple[float, np.ndarray]]) -> np.ndarray | None:
    """The mean of per-piece vectors, each weighted by the piece's milliseconds of speech; None without any."""
    return np.sum([ms * v for ms, v in held], axis=0) / sum(ms for ms, _ in held) if held else None


def merge(pieces: list[Evidence]) -> Evidence:
    faces = sum(p.faces for p in pieces)
    weight = sum(p.face_weight for p in pieces)
    probs: np.ndarray | None = None
    if faces and weight > 0:
        probs = np.sum([p.face_probs * p.face_weight for p in pieces if p.face_probs is not None], axis=0) / weight
    audio_ms = sum(p.audio_ms for p in pieces)
    speech = [(p.speech_ratio * p.audio_ms, p.arousal) for p in pieces]
    speech_ms = sum(ms for ms, _ in speech)
    voiced = [(ms, a) for ms, a in speech if a is not None and ms > 0]
    arousal = sum(ms * a for ms, a in voiced) / sum(ms for ms, _ in voiced) if voiced else None
    # The voice net's answers by the speech each piece held (pieces with speech but no net result, a
    # window too short say, do not dilute them); the cues only where they stand behind an arousal.
    held = list(zip(speech, pieces, strict=True))
    voice = _by_speech([(ms, p.voice_probs) for (ms, _), p in held if p.voice_probs is not None and ms > 0])
    cues = _by_speech([(ms, p.cues) for (ms, a), p in held if p.cues is not None and a is not None and ms > 0])
    dims = _by_speech([(ms, p.voice_dims) for (ms, _), p in held if p.voice_dims is not None and ms > 0])
    said = [(p.word_ms, p.word_valence) for p in pieces if p.word_valence is not None and p.word_ms > 0]
    word_ms = sum(ms for ms, _ in said)
    valence = sum(ms * v for ms, v in said) / word_ms if said else None
    return Evidence(sum(p.frames for p in pieces), faces, weight, probs, audio_ms,
                    speech_ms / audio_ms if audio_ms else 0.0, arousal, voice, cues, dims, word_ms, valence)


def heard_arousal(e: Evidence) -> tuple[float | None, str | None]:
    """The arousal a row reports and where it came from: a dimensional voice net's where it answered
    arousal (it heard the speech, prosody only measures it), else the prosodic estimate."""
    if e.voice_dims is not None and np.isfinite(e.voice_dims[1]):
        return float(e.voice_dims[1]), "voice_net"
    return (e.arousal, "prosody") if e.arousal is not None else (None, None)


def fuse_evidence(e: Evidence, params: FusionParams = DEFAULT_FUSION) -> Fused:
    """The fused result of (merged) evidence; for one whole cell it equals what the model serves."""
    speech = e.audio_ms > 0 and e.speech_ratio >= params.min_speech_ratio and (
        e.arousal is not None or e.voice_probs is not None)
    f = fuse(e.face_probs, speech, e.arousal if speech else None, e.voice_probs if speech else None, params,
             e.word_valence if speech else None)
    arousal, source = heard_arousal(e) if speech else (None, None)
    return Fused(f.probs, f.label, f.confidence, f.face_found, f.speech_found, f.modality,
                 face_score=e.face_score, arousal=arousal, arousal_source=source, speech_ratio=e.speech_ratio)


def aggregate_face(probs: np.ndarray, scores: np.ndarray,
                   min_score: float = FACE_MIN_SCORE) -> tuple[np.ndarray | None, float, int]:
    """Mean of per-frame probabilities weighted by detection confidence over trusted detections (score
    at least `min_score`, the detector's bar), their mean score and their count."""
    probs, scores = np.asarray(probs, np.float64), np.asarray(scores, np.float64)
    trusted = (scores >= min_score) & (scores > 0)
    if not trusted.any():
        return None, 0.0, 0
    w = scores[trusted]
    return (probs[trusted] * w[:, None]).sum(axis=0) / w.sum(), float(w.mean()), int(trusted.sum())


def arousal_prior(arousal: float) -> np.ndarray:
    d = np.asarray(DFEW_AROUSAL) - arousal
    p = np.exp(-0.5 * (d / PRIOR_WIDTH) ** 2)
    return p / p.sum()


def circumplex_valence(valence: float) -> float:
    """Where a sentence's valence score sits on the circumplex. Sentence scores run low for plainly
    pleasant or unpleasant words (VADER: "Thank you so much." 0.36, halfway between neutral's 0 and
    happy's 0.8), so a calm thank-you read neutral; the square root keeps the sign and 0, and moves mild
    scores out (0.36 to 0.6, 0.05 to 0.22): the sign of the words decides the half of the circle, the
    voice's arousal the label within it."""
    return float(np.sign(valence) * np.sqrt(abs(valence)))


def valence_prior(valence: float) -> np.ndarray:
    d = np.asarray(DFEW_VALENCE) - circumplex_valence(valence)
    p = np.exp(-0.5 * (d / VALENCE_WIDTH) ** 2)
    return p / p.sum()


def _power(p: np.ndarray, w: float) -> np.ndarray:
    """p ** w without 0 ** w turning a confident zero into an impossible product (a floor of 1e-12)."""
    return np.power(np.maximum(np.asarray(p, np.float64), 1e-12), w) if w != 1 else np.asarray(p, np.float64)


def fuse(face_probs: np.ndarray | None, speech_found: bool, arousal: float | None,
         voice_probs: np.ndarray | None = None, params: FusionParams = DEFAULT_FUSION,
         valence: float | None = None) -> Fused:
    face_found = face_probs is not None
    heard = voice_probs if speech_found else None
    voice = arousal if speech_found and heard is None else None
    # What was said, as a prior over the labels' valence (sharp: clear words decide the half of the
    # circle). Alone with the arousal it places a voice-only segment on the circumplex; beside a face or a
    # voice net it is half uniform, so that words cannot silence what those saw or heard.
    said = (valence_prior(valence) ** params.words_weight if speech_found and valence is not None
            and params.words_weight > 0 else None)
    if said is not None:
        said = said / said.sum()
    beside = None if said is None else 0.5 * said + 0.5 / len(DFEW_LABELS)
    prior = None
    if voice is not None:
        alone = face_probs is None
        prior = arousal_prior(voice) if said is None else arousal_prior(voice) * (said if alone else beside)
        prior = prior / prior.sum()
    if heard is not None and beside is not None:
        heard = heard * beside
        heard = heard / heard.sum()
    if face_probs is not None and heard is not None:
        p = _power(face_probs, params.face_weight) * _power(heard, params.voice_weight)
        modality = "face+voice"
    elif face_probs is not None and prior is not None:
        p = _power(face_probs, params.face_weight) * prior ** params.arousal_weight
        modality = "face+voice"
    elif face_probs is not None:
        p = _power(face_probs, params.face_weight)
        modality = "face"
    elif heard is not None:
        p = _power(heard, params.voice_weight)
        modality = "voice"
    elif prior is not None:
        p = params.voice_only_mix * prior + (1 - params.voice_only_mix) / len(DFEW_LABELS)
        modality = "voice"
    else:
        return Fused(None, None, 0.0, False, speech_found, "none")
    p = p / p.sum()
    best = int(np.argmax(p))
    return Fused(p, DFEW_LABELS[best], float(p[best]), face_found, speech_found, modality)


FaceAggregate = tuple[np.ndarray | None, float, int]   # probabilities, mean score, trusted faces


def faces_per_item(probs: np.ndarray, scores: np.ndarray, mask: np.ndarray,
                   min_score: float = FACE_MIN_SCORE) -> list[FaceAggregate]:
    """Aggregate per-frame results back to their items. `mask` (items x frames) marks the real frames;
    `probs` and `scores` hold one row per real frame, in mask order."""
    n_items, n_frames = mask.shape
    owner = np.repeat(np.arange(n_items), n_frames)[mask.reshape(-1)]
    return [aggregate_face(probs[owner == i], scores[owner == i], min_score) for i in range(n_items)]


def fuse_items(faces: list[FaceAggregate], speech_ratio: np.ndarray, arousal: np.ndarray,
               voice_probs: list[np.ndarray | None], params: FusionParams = DEFAULT_FUSION) -> list[Fused]:
    out = []
    for (face_probs, _, _), ratio, ar, heard in zip(faces, speech_ratio.reshape(-1), arousal.reshape(-1),
                                                    voice_probs, strict=True):
        speech = bool(ratio >= params.min_speech_ratio)
        out.append(fuse(face_probs, speech, float(ar) if speech else None, heard if speech else None, params))
    return out


CUE_NAMES = ("energy", "pitch variability", "rate")
DIMENSIONS = ("valence", "arousal", "dominance")   # Evidence.voice_dims, in this order


def _top(probs: np.ndarray | None, k: int = 2) -> list[list[Any]]:
    if probs is None:
        return []
    order = np.argsort(-np.asarray(probs))[:k]
    return [[DFEW_LABELS[int(i)], round(float(probs[i]), 3)] for i in order]


def explain(e: Evidence, f: Fused, params: FusionParams = DEFAULT_FUSION) -> dict[str, Any] | None:
    """What drove a row's label, in numbers that can be checked against the rest of the row, and one
    plain-language line. None when the cell had no media at all."""
    if not e.frames and not e.audio_ms:
        return None
    out: dict[str, Any] = {}
    parts = []
    if e.frames:
        out["face"] = {"frames": e.frames, "faces": e.faces, "score": round(e.face_score, 3),
                       "top": _top(e.face_probs)}
        if e.face_probs is not None:
            label, p = out["face"]["top"][0]
            parts.append(f"face: {label} {p:.2f} over {e.faces} frame{'s' if e.faces != 1 else ''}")
        else:
            parts.append(f"face: none in {e.frames} frame{'s' if e.frames != 1 else ''}")
    if e.audio_ms:
        v: dict[str, Any] = {"speech_ratio": round(e.speech_ratio, 3)}
        if f.speech_found and e.voice_probs is not None:
            v["top"] = _top(e.voice_probs)
            label, p = v["top"][0]
            text = f"voice: {label} {p:.2f}"
            if e.voice_dims is not None:
                v["dimensions"] = {name: round(float(x), 3) for name, x in zip(DIMENSIONS, e.voice_dims, strict=True)
                                   if np.isfinite(x)}
                text += " (" + ", ".join(f"{k} {x:+.2f}" if k == "valence" else f"{k} {x:.2f}"
                                         for k, x in v["dimensions"].items()) + ")"
                if e.arousal is not None:
                    v["prosodic_arousal"] = round(e.arousal, 3)
            parts.append(text)
        elif f.speech_found and e.arousal is not None:
            v["arousal"] = round(e.arousal, 3)
            level = "high" if e.arousal >= 0.6 else "low" if e.arousal <= 0.4 else "moderate"
            text = f"voice: {level} arousal"
            if e.cues is not None:
                v["cues"] = {name: round(float(z), 2) for name, z in zip(CUE_NAMES, e.cues, strict=True)}
                k = int(np.argmax(np.abs(e.cues)))
                text += f" ({CUE_NAMES[k]} {float(e.cues[k]):+.1f}σ)"
            parts.append(text)
        else:
            parts.append("voice: no speech")
        out["voice"] = v
    if f.speech_found and e.word_valence is not None:
        # The valence only: the words themselves are a transcript, readable through its own role.
        out["words"] = {"valence": round(e.word_valence, 3), "seconds": round(e.word_ms / 1000, 2)}
        parts.append(f"words: valence {e.word_valence:+.2f}")
    heard = f.speech_found and e.voice_probs is not None
    out["fusion"] = {"face_weight": params.face_weight,
                     **({"voice_weight": params.voice_weight} if heard else {"arousal_weight": params.arousal_weight}),
                     **({"words_weight": params.words_weight} if "words" in out else {})}
    parts.append(f"fused: {f.label}" if f.label else "fused: no label")
    out["summary"] = "; ".join(parts)
    return out
