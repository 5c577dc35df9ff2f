"""A chunk's words: which stretch of each participant's audio is transcribed next, which utterances
are kept, how they are stored (CALLSTREAM_TRANSCRIPTS) and what each piece of the grid was said in.
Pure: the Triton call is worker/words_client.py, the rows' writing store/writer.py.

Edges. Inside a chunk, audio is analysed a decode window at a time; an utterance still going at a
window's end is not kept but transcribed again, whole, with the next window (the buffer keeps its
audio), so a window edge never cuts a word. Across chunks nothing of the media is kept (raw media is
transient, and the next chunk may go to another worker): an utterance that runs into the chunk's end is
stored with `open_end`, the next chunk's first one with `open_start`, and the `utterances` view joins
the two halves. Each word is placed once, in the chunk whose audio holds it; a word cut in two by the
recorder is heard in part by each side at worst.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.shared.words import EDGE_MS, Said, Utterance, said_in
from pipeline.store.models import Heard, PieceRow, UtteranceRow

MAX_HOLD_MS = 30_000   # an utterance longer than this is kept where the window cuts it (bounded memory)
LEAD_IN_MS = 300       # a held utterance is heard again from this much before it: Whisper drops words
                       # that start right at the beginning of its audio

_DIGITS = re.compile(r"\d(?:[\s.,()/-]*\d)*")
_NUMBER_WORDS = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|double|triple)"
_SPOKEN_RUN = re.compile(rf"\b{_NUMBER_WORDS}(?:[\s,.-]+{_NUMBER_WORDS}){{2,}}\b", re.IGNORECASE)
MASK = "#"


def _after(u: Utterance, ms: int) -> Utterance:
    """The utterance without the words whose midpoint lies before `ms`."""
    words = tuple(w for w in u.words if w.mid_ms >= ms)
    if len(words) == len(u.words) or not words:
        return u if len(words) == len(u.words) else Utterance(u.start_ms, u.end_ms, "", u.valence, ())
    return Utterance(words[0].start_ms, u.end_ms, " ".join(w.text for w in words), u.valence, words,
                     u.open_start, u.open_end)


def redact(text: str) -> str:
    """Every run of digits (with the spaces, dots and dashes inside it: card, phone and account numbers)
    and every run of three or more spoken digits becomes one `#`."""
    return _DIGITS.sub(MASK, _SPOKEN_RUN.sub(MASK, text))


def kept(text: str, policy: str) -> str | None:
    """What CALLSTREAM_TRANSCRIPTS keeps of an utterance's text: all, redacted, or nothing."""
    return text if policy == "text" else redact(text) if policy == "redacted" else None


@dataclass
class ChunkWords:
    """One chunk's utterances per participant, committed stretch by stretch."""
    chunk_start_ms: int
    end_of_call: bool
    next_ms: dict[str, int] = field(default_factory=dict)        # participant -> start of the next stretch
    kept_ms: dict[str, int] = field(default_factory=dict)        # participant -> end of the last word kept
    said: dict[str, list[Utterance]] = field(default_factory=dict)

    def stretch(self, participant: str, end_ms: int) -> tuple[int, int]:
        return self.next_ms.get(participant, self.chunk_start_ms), end_ms

    def held_from(self) -> int | None:
        """The earliest audio a held utterance needs again (None: nothing held)."""
        return min(self.next_ms.values()) if self.next_ms else None

    def pending(self, end_ms: int) -> bool:
        """Whether some participant's speech before `end_ms` is not kept yet (an utterance held back)."""
        return any(ms < end_ms for ms in self.next_ms.values())

    def take(self, participant: str, heard: list[Utterance], start_ms: int, end_ms: int, final: bool) -> None:
        """Keep what was heard in [start_ms, end_ms) (call time). Not final: an utterance still going at
        the end is held back and transcribed again with the next stretch."""
        first = start_ms == self.chunk_start_ms   # this stretch begins at the chunk's cut
        kept = self.kept_ms.get(participant, start_ms)
        # Words already kept from the previous stretch (its lead-in overlaps them) are not kept twice.
        heard = [_after(u, kept) for u in heard]
        heard = [u for u in heard if u.words]
        if not final and heard and heard[-1].words[-1].end_ms >= end_ms - EDGE_MS \
                and end_ms - heard[-1].start_ms <= MAX_HOLD_MS:
            held, heard = heard[-1], heard[:-1]
            last = heard[-1].words[-1].end_ms if heard else kept
            self.next_ms[participant] = max(start_ms, last, held.start_ms - LEAD_IN_MS)
        else:
            self.next_ms[participant] = end_ms
        if heard:
            self.kept_ms[participant] = heard[-1].words[-1].end_ms
        if first and heard and self.chunk_start_ms > 0 and heard[0].words[0].start_ms <= start_ms + EDGE_MS:
            u = heard[0]
            heard[0] = Utterance(u.start_ms, u.end_ms, u.text, u.valence, u.words, True, u.open_end)
        if final and heard and not self.end_of_call and heard[-1].words[-1].end_ms >= end_ms - EDGE_MS:
            u = heard[-1]
            heard[-1] = Utterance(u.start_ms, u.end_ms, u.text, u.valence, u.words, u.open_start, True)
        self.said.setdefault(participant, []).extend(heard)

    def place(self, pieces: Iterable[PieceRow]) -> None:
        """Each piece's words: their time and valence (the fusion's evidence)."""
        for p in pieces:
            s: Said = said_in(self.said.get(p["participant_id"], []), p["start_ms"], p["end_ms"])
            p["word_ms"], p["word_valence"] = s.ms, s.valence

    def heard(self, roles: dict[str, str], version: str) -> list[Heard]:
        return [Heard(pid, roles[pid], u.start_ms, u.end_ms, u.text, version)
                for pid, utterances in sorted(self.said.items()) for u in utterances]

    def rows(self, call_id: str, stream: str, seq: int, roles: dict[str, str], version: str,
             policy: str) -> list[UtteranceRow]:
        out = []
        for pid, utterances in sorted(self.said.items()):
            for u in utterances:
                text = kept(u.text, policy)
                words = None if text is None else [[w.start_ms, w.end_ms, kept(w.text, policy)] for w in u.words]
                out.append(UtteranceRow(call_id=call_id, participant_id=pid, role=roles[pid], stream=stream, seq=seq,
                                        start_ms=u.start_ms, end_ms=u.end_ms, words_model=version,
                                        word_count=len(u.words), valence=u.valence, text=text, words=words,
                                        open_start=u.open_start, open_end=u.open_end))
        return out
