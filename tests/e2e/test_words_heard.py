"""Words end to end on the real stack: a worker with CALLSTREAM_WORDS on hears an eSpeak NG caller
whose sentences have a known sentiment, one of them cut by a chunk boundary."""

from __future__ import annotations

import os
import re
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
    # The analyst's views: the talk and silence the call was made with, its length, the mood's course.
    (summary,) = query(settings, "SELECT audio_seconds, talk_seconds, silence_seconds, overlap_seconds FROM "
                                 "participant_summary WHERE call_id = 'e2e-words'")
    spoken = 3.4 + 3.3 + 2.0   # the three sentences' lengths as eSpeak NG says them
    assert abs(summary.audio_seconds - 15) <= 0.1 and abs(float(summary.talk_seconds) - spoken) <= 2.0, summary
    assert summary.talk_seconds + summary.silence_seconds == summary.audio_seconds and summary.overlap_seconds == 0
    (call,) = query(settings, "SELECT duration_seconds, participants FROM call_overview WHERE call_id = 'e2e-words'")
    assert (call.duration_seconds, call.participants) == (15, 1)
    (course,) = query(settings, "SELECT start_label, end_label, worst_s, worst_label, round(end_negative, 1) AS e "
                                "FROM participant_trajectory WHERE call_id = 'e2e-words'")
    assert DFEW_VALENCE[DFEW_LABELS.index(course.start_label)] < 0 < DFEW_VALENCE[DFEW_LABELS.index(course.end_label)]
    assert course.worst_s < 4 and course.worst_label in ("sad", "angry", "fear", "disgust"), course
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


def test_models_eval_hears_the_clips_and_scores_the_words(stack, tmp_path):
    """`models eval --words` on labelled eSpeak NG clips with reference transcripts: voice and fused with
    and without the words, and the word error rate."""
    clips = {"sad": (NEGATIVE, False), "angry": ("This is terrible, I am furious with your awful service!", True),
             "happy": (POSITIVE, False), "neutral": ("I am calling about the delivery of my order.", False)}
    rows = []
    for label, (text, aroused) in clips.items():
        said_wav(tmp_path / f"{label}.wav", 5.0, [(0.3, text, aroused)])
        rows.append(f'{label}.wav,{label},"{text}"')
    # Camera on: the astronaut's happy face while the words are negative: fused, the face decides.
    from scipy.io import wavfile

    from tests.model_kit import write_clip

    rate, pcm = wavfile.read(tmp_path / "sad.wav")
    write_clip(tmp_path / "face.mp4", pcm.astype(np.float32) / 32768)
    rows.append(f'face.mp4,happy,"{NEGATIVE}"')
    (tmp_path / "labels.csv").write_text("path,label,transcript\n" + "\n".join(rows) + "\n")
    env, _ = stack.isolated("words-eval")
    ran = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "eval", str(tmp_path / "labels.csv"),
                          "--words", "--per-clip"], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=300, cwd=REPO_ROOT)
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = ran.stdout
    print(out)
    summary = {line.split()[0]: line.split()[1:4] for line in out.splitlines()
               if line.startswith("  ") and line.split()[0] in ("voice", "voice+words", "fused", "fused+words")}
    assert set(summary) == {"voice", "voice+words", "fused", "fused+words"}, out
    assert float(summary["voice+words"][1]) >= float(summary["voice"][1])   # WAR: the words only help here
    wer = re.search(r"words: WER ([0-9.]+) over 5 clips with a reference transcript", out)
    assert wer and float(wer.group(1)) <= 0.3, out
    # Per clip, the label with the words takes the sign of what was said.
    header = next(line.split() for line in out.splitlines() if line.split()[:2] == ["clip", "truth"])
    column = header.index("voice+words")
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0].endswith(".wav") and cells[0][:-4] in clips:
            truth, label = cells[1], cells[column]
            assert np.sign(DFEW_VALENCE[DFEW_LABELS.index(label)]) == np.sign(DFEW_VALENCE[DFEW_LABELS.index(truth)])
    (face,) = [line.split() for line in out.splitlines() if line.split()[:1] == ["face.mp4"]]
    assert face[header.index("face")] == face[header.index("fused+words")] == "happy", face
    assert DFEW_VALENCE[DFEW_LABELS.index(face[column])] < 0, face   # what the voice and words alone say


def test_a_long_chunk_of_talk_is_heard_a_window_at_a_time_without_gaps_or_repeats(stack, tmp_path):
    """Two minutes of unbroken speech in one chunk: heard in 30-s decode windows, every utterance held
    at a window's end heard again whole; what is kept covers the talk, in order, without overlaps."""
    from callstream_lab.synth import speech_wav

    env, _ = stack.isolated("words-long")
    env.update({"CALLSTREAM_WORDS": "true", "CALLSTREAM_TRANSCRIPTS": "text"})
    settings = Settings.from_env(env)
    wav = speech_wav(tmp_path / "talk.wav", calm_s=120.0)
    worker = stack.start_worker(env, "words-long")
    try:
        sent = publish_recording(settings, wav, "e2e-words-long", layout="customer", chunk_seconds=600)
        assert len(sent) == 1
        wait_chunks(settings, "e2e-words-long", 1, timeout=300)
    finally:
        stack.stop_worker(worker)
    pieces = query(settings, "SELECT start_ms, end_ms, word_count, words FROM utterance_pieces "
                             "WHERE call_id = 'e2e-words-long' ORDER BY start_ms")
    words = [w for p in pieces for w in p.words]
    assert all(a[1] <= b[0] + 50 for a, b in zip(words, words[1:], strict=False)), "words overlap: heard twice"
    covered = {int(ms) // 1000 for w in words for ms in range(w[0], w[1], 100)}
    assert len(covered) >= 100, f"words in {len(covered)} of 120 seconds"
    assert sum(p.word_count for p in pieces) >= 250   # ~150 words a minute
