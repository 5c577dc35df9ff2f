"""Words, pure: the wire form read as untrusted, words placed on the grid once, edges of chunks and
windows, redaction, and what valence does to a label."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.shared.fusion import Evidence, fuse, fuse_evidence, merge
from pipeline.shared.labels import DFEW_LABELS, DFEW_VALENCE
from pipeline.shared.words import Utterance, WireError, Word, from_wire, said_in, to_wire
from pipeline.worker.transcript import ChunkWords, kept, redact


def utt(start: int, words: list[tuple[int, int, str]], valence: float = 0.0) -> Utterance:
    ws = tuple(Word(a, b, w) for a, b, w in words)
    return Utterance(start, ws[-1].end_ms, " ".join(w for _, _, w in words), valence, ws)


def test_the_wire_form_round_trips_and_refuses_what_the_model_never_writes():
    wire = to_wire([(0.5, 1.5, "hello there", 0.4, [(0.5, 0.9, "hello"), (1.0, 1.5, "there")])])
    (u,) = from_wire(wire, 2.0)
    assert (u.start_ms, u.end_ms, u.text, u.valence) == (500, 1500, "hello there", 0.4)
    assert [w.text for w in u.words] == ["hello", "there"]
    bad = [b"not json", b'{"utterances": 3}', b"{}", to_wire([(0, 1, "x", 2.0, [(0, 1, "x")])]),
           to_wire([(0, 1, "x", 0.1, [(0, 99.0, "x")])]), json.dumps({"utterances": [{"start": 0}]}),
           to_wire([(0, 1, "x", float("nan"), [(0, 1, "x")])]), b"[" * (1 << 21)]
    for raw in bad:
        with pytest.raises(WireError):
            from_wire(raw, 2.0)
    # Empty words are dropped; an utterance left with none is not an utterance.
    assert from_wire(to_wire([(0, 1, " ", 0.0, [(0, 1, " ")])]), 2.0) == []


def test_each_word_lands_in_exactly_one_segment_by_its_midpoint():
    u = utt(900, [(900, 1300, "nothing"), (1300, 1500, "is"), (1500, 2100, "fixed")], -0.6)
    cells = [said_in([u], a, a + 1000) for a in (0, 1000, 2000)]
    assert [c.text for c in cells] == ["", "nothing is fixed", ""]
    assert cells[1].valence == pytest.approx(-0.6) and cells[1].ms == 1200
    halves = [said_in([u], a, a + 500) for a in (1000, 1500)]
    assert [h.text for h in halves] == ["nothing is", "fixed"]


def test_an_utterance_going_at_a_windows_end_is_heard_again_with_the_next():
    w = ChunkWords(chunk_start_ms=10_000, end_of_call=False)
    first = [utt(11_000, [(11_000, 11_500, "one")]), utt(39_000, [(39_000, 39_800, "two")])]
    assert w.stretch("c", 40_000) == (10_000, 40_000)
    w.take("c", first, 10_000, 40_000, final=False)
    assert [u.text for u in w.said["c"]] == ["one"] and w.held_from() == 38_700   # a lead-in of 300 ms
    assert w.stretch("c", 45_000) == (38_700, 45_000)
    w.take("c", [utt(39_000, [(39_000, 39_800, "two"), (40_100, 40_600, "three")])], 38_700, 45_000, final=True)
    assert [u.text for u in w.said["c"]] == ["one", "two three"]
    assert not any(u.open_start or u.open_end for u in w.said["c"])


def test_utterances_at_a_chunks_cut_edges_are_marked_open_and_the_calls_own_edges_are_not():
    mid = ChunkWords(chunk_start_ms=5000, end_of_call=False)
    mid.take("c", [utt(5100, [(5100, 5400, "fixed")]), utt(9700, [(9700, 9950, "but")])], 5000, 10_000, final=True)
    assert [(u.open_start, u.open_end) for u in mid.said["c"]] == [(True, False), (False, True)]
    first = ChunkWords(chunk_start_ms=0, end_of_call=True)
    first.take("c", [utt(100, [(100, 400, "hello")]), utt(9700, [(9700, 9950, "bye")])], 0, 10_000, final=True)
    assert [(u.open_start, u.open_end) for u in first.said["c"]] == [(False, False), (False, False)]


def test_pieces_get_their_words_and_rows_keep_what_the_setting_keeps():
    w = ChunkWords(chunk_start_ms=0, end_of_call=True)
    w.take("c", [utt(200, [(200, 600, "card"), (700, 1800, "4111 1111")], -0.2)], 0, 2000, final=True)
    pieces = [{"participant_id": "c", "start_ms": 0, "end_ms": 1000}, {"participant_id": "c", "start_ms": 1000,
                                                                       "end_ms": 2000}]
    w.place(pieces)   # type: ignore[arg-type]
    assert [(p["word_ms"], p["word_valence"]) for p in pieces] == [(400, -0.2), (1100, -0.2)]
    for policy, text in (("text", "card 4111 1111"), ("redacted", "card #"), ("none", None)):
        (row,) = w.rows("call", "", 3, {"c": "customer"}, "words/1", policy)
        assert row["text"] == text and row["valence"] == -0.2 and row["word_count"] == 2
        assert (row["words"] is None) == (text is None)


def test_redaction_masks_digit_runs_and_spoken_numbers_only():
    assert redact("my card is 4111-1111 1111 1111, call 555 0100") == "my card is #, call #"
    assert redact("it is four five six seven and one of them") == "it is # and one of them"
    assert redact("no numbers here") == "no numbers here"
    assert kept("4", "none") is None


@pytest.mark.parametrize("arousal", [0.25, 0.85])
@pytest.mark.parametrize("valence", [-0.7, 0.0, 0.7])
def test_a_voice_only_label_takes_the_sign_of_what_was_said(valence, arousal):
    f = fuse(None, True, arousal, valence=valence)
    label_valence = DFEW_VALENCE[DFEW_LABELS.index(f.label)]
    assert f.modality == "voice"
    if valence:
        assert np.sign(label_valence) == np.sign(valence), f.label
    else:
        assert abs(label_valence) <= 0.3, f.label


def test_a_strong_face_still_decides_beside_words_of_the_other_sign():
    happy_face = np.array([0.04, 0.85, 0.03, 0.02, 0.02, 0.02, 0.02])
    assert fuse(happy_face, True, 0.7, valence=-0.8).label == "happy"
    angry_face = np.array([0.05, 0.03, 0.05, 0.75, 0.05, 0.05, 0.02])
    assert fuse(angry_face, True, 0.5, valence=0.8).label == "angry"


def test_pieces_valence_merges_by_the_time_of_their_words():
    a = Evidence(0, 0, 0.0, None, 500, 0.8, 0.3, word_ms=300, word_valence=-0.6)
    b = Evidence(0, 0, 0.0, None, 500, 0.8, 0.3, word_ms=100, word_valence=0.2)
    e = merge([a, b])
    assert e.word_ms == 400 and e.word_valence == pytest.approx(-0.4)
    f = fuse_evidence(e)
    assert f.label == "sad"
    assert fuse_evidence(merge([a, Evidence(0, 0, 0.0, None, 500, 0.8, 0.3)])).label == "sad"



def test_a_held_utterance_is_heard_again_with_a_lead_in_and_no_word_is_kept_twice():
    w = ChunkWords(chunk_start_ms=0, end_of_call=True)
    w.take("c", [utt(200, [(200, 800, "this"), (900, 1300, "is")]), utt(1500, [(1500, 1700, "i"),
                                                                                 (1750, 1990, "am")])], 0, 2000,
           final=False)
    assert [u.text for u in w.said["c"]] == ["this is"] and w.next_ms["c"] == 1300   # 1500 - 300, not before "is"
    # The lead-in hears "is" again: it is not kept a second time.
    w.take("c", [utt(1000, [(1000, 1290, "is"), (1500, 1700, "i"), (1750, 2000, "am"), (2100, 2600, "angry")])],
           1300, 4000, final=True)
    assert [u.text for u in w.said["c"]] == ["this is", "i am angry"]
    assert w.said["c"][1].start_ms == 1500


def test_what_is_held_is_pending_until_heard_and_an_endless_utterance_is_not_held():
    w = ChunkWords(chunk_start_ms=0, end_of_call=True)
    w.take("c", [utt(25_000, [(25_000, 29_900, "still going")])], 0, 30_000, final=False)
    assert w.pending(30_000) and w.said.get("c", []) == []
    w.take("c", [utt(25_000, [(25_000, 31_000, "still going on")])], 24_700, 31_000, final=True)
    assert not w.pending(31_000) and [u.text for u in w.said["c"]] == ["still going on"]
    # Talk without a pause longer than MAX_HOLD_MS is kept where the window cuts it: memory stays bounded.
    long = ChunkWords(chunk_start_ms=0, end_of_call=True)
    long.take("c", [utt(0, [(ms, ms + 400, "word") for ms in range(0, 31_000, 500)])], 0, 31_000, final=False)
    assert len(long.said["c"]) == 1 and not long.pending(31_000)
