"""Words end to end on the real stack: a worker with CALLSTREAM_WORDS on hears an eSpeak NG caller
whose sentences have a known sentiment, one of them cut by a chunk boundary."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from callstream_lab.synth import said_wav
from pipeline.ingest.producer import publish_recording
from pipeline.settings import REPO_ROOT, Settings
from pipeline.shared.labels import DFEW_LABELS, DFEW_VALENCE
from tests.e2e.helpers import query, wait_chunks

pytestmark = pytest.mark.stack

NEGATIVE = "This is terrible, I am angry and very disappointed."
NEUTRAL = "I am calling about the delivery of my order from last week."   # 8.4 s to ~11.7 s: cut at 10 s
POSITIVE = "Thank you so much, that was really helpful."


def test_words_give_voice_only_segments_labels_of_their_sentiment_and_a_cut_sentence_reads_once(stack, tmp_path):
    env, _ = stack.isolated("words")
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "upset-words"\nphrases = ["terrible", "lawyer"]\n'
                     '[[rule]]\nname = "leaving"\nphrases = ["cancel"]\n')
    # Decode windows of 2 s: every chunk is heard a window at a time, so utterances still going at a
    # window's end are held back and heard again (the path a long chunk takes), besides the cut at 10 s.
    env.update({"CALLSTREAM_WORDS": "true", "CALLSTREAM_TRANSCRIPTS": "text", "CALLSTREAM_CHUNK_SECONDS": "5",
                "CALLSTREAM_ALERT_RULES": str(rules), "CALLSTREAM_DECODE_WINDOW_S": "2"})
    settings = Settings.from_env(env)
    wav = said_wav(tmp_path / "said.wav", 15.0, [(0.3, NEGATIVE, False), (8.4, NEUTRAL, False),
                                                  (12.6, POSITIVE, True)])
    worker = stack.start_worker(env, "words")
    try:
        sent = publish_recording(settings, wav, "e2e-words", layout="customer", chunk_seconds=5)
        assert len(sent) == 3
        wait_chunks(settings, "e2e-words", len(sent), timeout=240)
    finally:
        stack.stop_worker(worker)
    said = query(settings, "SELECT start_ms, text, valence, pieces FROM utterances WHERE call_id = 'e2e-words' "
                           "ORDER BY start_ms")
    print([tuple(r) for r in said])
    print([tuple(r) for r in query(settings, "SELECT seq, start_ms, end_ms, text, open_start, open_end FROM "
                                             "utterance_pieces WHERE call_id = 'e2e-words' ORDER BY start_ms")])
    negative = [r for r in said if r.start_ms < 5000]
    cut = [r for r in said if 5000 <= r.start_ms < 12_000]
    positive = [r for r in said if r.start_ms >= 12_000]
    assert len(negative) + len(cut) + len(positive) == len(said) <= 5, said   # nothing else was heard
    text = " ".join(r.text.lower() for r in negative)
    assert "terrible" in text and "disappointed" in text and all(r.valence < -0.3 for r in negative), said
    # The sentence the boundary at 10 s cut: one utterance of two pieces, its words each heard once;
    # the one word the cut splits may be lost (each side hears too little of it).
    assert len(cut) == 1 and cut[0].pieces == 2, said
    heard = cut[0].text.lower().replace(",", " ").replace(".", " ").split()
    assert "delivery" in heard and "week" in heard and len(heard) == len(set(heard)), heard
    assert len(set(NEUTRAL.lower().rstrip(".").split()) - set(heard)) <= 2, heard
    # The positive sentence, which Whisper may split in two: positive.
    assert "helpful" in " ".join(r.text.lower() for r in positive) and all(r.valence > 0.3 for r in positive), said
    # The timeline explains each labelled second, quoting what was said in it.
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "timeline", "e2e-words", "--explain"],
                         capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("1-2 s"))
    assert "voice:" in line and "words: valence -0." in line and 'said "' in line, out.stdout
    # A phrase alert, once, naming the phrase and not the sentence; nobody said "cancel".
    alerts = query(settings, "SELECT rule, window_start_ms, details FROM alerts WHERE call_id = 'e2e-words'")
    assert [(a.rule, a.details) for a in alerts] == [("upset-words", {"phrase": "terrible"})]
    assert alerts[0].window_start_ms < 1000
    rows = query(settings, "SELECT start_ms, label, word_valence FROM emotion_timeline WHERE call_id = 'e2e-words' "
                           "AND word_valence IS NOT NULL AND label IS NOT NULL ORDER BY start_ms")
    print([tuple(r) for r in rows])
    # Each sentence's seconds (camera off: voice-only) mostly take a label of the sentence's sign.
    for (start, end), sign in (((0, 4000), -1), ((8000, 12_000), 0), ((12_000, 15_000), 1)):
        labels = [r.label for r in rows if start <= r.start_ms < end]
        assert labels, (start, end)
        top = max(set(labels), key=labels.count)
        label_valence = DFEW_VALENCE[DFEW_LABELS.index(top)]
        assert (abs(label_valence) <= 0.3 if sign == 0 else np.sign(label_valence) == sign), (start, labels)
