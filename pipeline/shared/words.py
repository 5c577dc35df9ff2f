"""Words on the wire and on the segment grid: what the `words` model answers and how the worker places
it. Pure; shared by the model (which writes the wire form) and the worker (which reads it, untrusted).

An utterance is one stretch of a participant's speech as the transcriber segments it (about a
sentence), with its words' times and one valence (-1 unpleasant .. 1 pleasant). Times on the wire are
seconds from the start of the audio the request carried; the worker moves them to call time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_WIRE_BYTES = 1 << 20      # one item's answer; more is not an answer to 30 s of audio
MAX_WORD_CHARS = 64
MAX_UTTERANCE_CHARS = 2000
# A word that ends this close to the end of the audio it was heard in (or starts this close to its
# start) may have been cut there: its utterance is open at that edge, and continues in the next chunk.
EDGE_MS = 700


@dataclass(frozen=True)
class Word:
    start_ms: int
    end_ms: int
    text: str

    @property
    def ms(self) -> int:
        return max(1, self.end_ms - self.start_ms)

    @property
    def mid_ms(self) -> float:
        return (self.start_ms + self.end_ms) / 2


@dataclass(frozen=True)
class Utterance:
    start_ms: int
    end_ms: int
    text: str
    valence: float
    words: tuple[Word, ...]
    open_start: bool = False   # may continue an utterance of the previous audio (cut at its start)
    open_end: bool = False     # may continue into the next audio (cut at its end)

    def shifted(self, ms: int) -> Utterance:
        return Utterance(self.start_ms + ms, self.end_ms + ms, self.text, self.valence,
                         tuple(Word(w.start_ms + ms, w.end_ms + ms, w.text) for w in self.words),
                         self.open_start, self.open_end)


def to_wire(utterances: Iterable[tuple[float, float, str, float, Sequence[tuple[float, float, str]]]]) -> str:
    """The model's answer for one item: (start s, end s, text, valence, [(start s, end s, word)])."""
    return json.dumps({"utterances": [
        {"start": round(s, 3), "end": round(e, 3), "text": text, "valence": round(v, 4),
         "words": [[round(ws, 3), round(we, 3), w] for ws, we, w in words]}
        for s, e, text, v, words in utterances]}, ensure_ascii=False)


class WireError(ValueError):
    """An answer that is not what the words model writes."""


def _seconds(x: object, limit_s: float) -> int:
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x) or not -1 <= x <= limit_s + 1:
        raise WireError(f"time {x!r} outside the audio's {limit_s:.1f} s")
    return int(round(max(0.0, min(float(x), limit_s)) * 1000))


def from_wire(raw: bytes | str, audio_s: float) -> list[Utterance]:
    """Parse one item's answer, checked against the audio it answers (times inside it, valence in
    [-1, 1], bounded text): a model of the user's, or a broken one, gets a clear error, not rows."""
    if len(raw) > MAX_WIRE_BYTES:
        raise WireError(f"answer of {len(raw)} bytes")
    try:
        doc = json.loads(raw)
        items = doc["utterances"]
    except (ValueError, TypeError, KeyError) as exc:
        raise WireError(f"not a words answer: {exc}") from None
    if not isinstance(items, list):
        raise WireError("utterances is not a list")
    out = []
    for u in items:
        try:
            valence = float(u["valence"])
            words = tuple(Word(_seconds(ws, audio_s), _seconds(we, audio_s), str(w).strip()[:MAX_WORD_CHARS])
                          for ws, we, w in u["words"])
            text = str(u["text"]).strip()[:MAX_UTTERANCE_CHARS]
            start, end = _seconds(u["start"], audio_s), _seconds(u["end"], audio_s)
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed utterance: {exc}") from None
        if not -1.0 <= valence <= 1.0:
            raise WireError(f"valence {valence!r} outside [-1, 1]")
        words = tuple(w for w in words if w.text)
        if not words:
            continue
        start, end = min(start, words[0].start_ms), max(end, words[-1].end_ms)
        out.append(Utterance(start, end, text, valence, words))
    return sorted(out, key=lambda u: u.start_ms)


@dataclass(frozen=True)
class Said:
    """The words of one participant that fall in one segment: placed by each word's midpoint, so a
    word belongs to exactly one segment. Valence: the utterances' valences weighted by word time."""
    ms: int = 0                  # time of the words placed here
    valence: float | None = None
    text: str = ""

    @property
    def words(self) -> int:
        return len(self.text.split()) if self.text else 0


def said_in(utterances: Sequence[Utterance], start_ms: int, end_ms: int) -> Said:
    placed = [(w, u.valence) for u in utterances if u.end_ms > start_ms - 60_000 and u.start_ms < end_ms + 60_000
              for w in u.words if start_ms <= w.mid_ms < end_ms]
    if not placed:
        return Said()
    ms = sum(w.ms for w, _ in placed)
    valence = sum(w.ms * v for w, v in placed) / ms
    return Said(ms, valence, " ".join(w.text for w, _ in placed))
