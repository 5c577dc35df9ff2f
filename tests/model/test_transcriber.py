"""The `words` model on real synthesized speech (eSpeak NG): transcripts, word times, valence, and bad
audio (silence, noise, music, too long) that must not make words up or run unbounded."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.signal import resample_poly

from callstream_lab.speech import synthesize
from pipeline.model.words import Words
from pipeline.model.words_manifest import WORDS_MANIFEST
from pipeline.shared.wire import SAMPLE_RATE
from pipeline.shared.words import from_wire

# Sentences whose sentiment is plain (VADER's compound: >= 0.05 positive, <= -0.05 negative).
SENTENCES = {
    "positive": "Thank you so much, that was really helpful and I am very happy.",
    "negative": "This is terrible, I am angry and very disappointed with your awful service.",
    "neutral": "I am calling about the delivery of my order.",
}


@pytest.fixture(scope="module")
def words(model_repository):
    return Words.from_manifest(model_repository / "words" / WORDS_MANIFEST, model_repository)


def speech(text: str, aroused: bool = False) -> np.ndarray:
    # Aroused: faster and higher, as the lab's generated calls speak an excited caller.
    audio, rate = synthesize(text, pitch=80 if aroused else 40, rate_wpm=210 if aroused else 150)
    return resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32)


CONTRACTIONS = {"i'm": "i am", "it's": "it is", "don't": "do not", "that's": "that is", "you're": "you are"}


def tokens(text: str) -> list[str]:
    return " ".join(CONTRACTIONS.get(t, t) for t in re.findall(r"[a-z']+", text.lower())).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference's length."""
    r, h = tokens(reference), tokens(hypothesis)
    d = np.arange(len(h) + 1)
    for i in range(1, len(r) + 1):
        prev, d[0] = d.copy(), i
        for j in range(1, len(h) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
    return float(d[len(h)]) / max(1, len(r))


def hear(words: Words, audio: np.ndarray):
    (answer,) = words.answer(audio[None, :], np.array([len(audio)]))
    return from_wire(answer, len(audio) / SAMPLE_RATE)


@pytest.mark.parametrize("aroused", [False, True], ids=["level", "aroused"])
@pytest.mark.parametrize("kind", list(SENTENCES))
def test_sentences_are_transcribed_with_times_and_the_valence_of_their_sentiment(words, kind, aroused):
    text = SENTENCES[kind]
    audio = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speech(text, aroused),
                            np.zeros(SAMPLE_RATE // 2, np.float32)])
    utterances = hear(words, audio)
    said = " ".join(u.text for u in utterances)
    error = wer(text, said)
    print(f"{kind} {'aroused' if aroused else 'level'}: WER {error:.2f}: {said!r}")
    # eSpeak's fast, high "aroused" voice is harder for Whisper tiny than its level one.
    assert error <= (0.6 if aroused else 0.2), said
    spoken = [w for u in utterances for w in u.words]
    assert spoken and all(0 <= w.start_ms <= w.end_ms <= len(audio) * 1000 // SAMPLE_RATE for w in spoken)
    assert spoken[0].start_ms >= 300   # the half second of silence before the first word
    valence = sum(u.valence * len(u.words) for u in utterances) / len(spoken)
    if kind == "positive":
        assert valence >= 0.3
    elif kind == "negative":
        assert valence <= -0.3
    else:
        assert abs(valence) < 0.3


def test_silence_noise_and_music_give_no_words(words):
    rng = np.random.default_rng(7)
    t = np.arange(10 * SAMPLE_RATE) / SAMPLE_RATE
    notes = 220 * 2 ** (np.floor(t * 2) % 8 / 12)   # a scale, half a second a note
    for name, audio in {"silence": np.zeros(10 * SAMPLE_RATE, np.float32),
                        "noise": (0.1 * rng.standard_normal(10 * SAMPLE_RATE)).astype(np.float32),
                        "music": (0.3 * np.sin(2 * np.pi * np.cumsum(notes) / SAMPLE_RATE)).astype(np.float32)
                        }.items():
        assert hear(words, audio) == [], name


def test_bad_requests_fail_with_a_reason(words):
    limit = int(words.manifest.max_audio_s * SAMPLE_RATE)
    with pytest.raises(ValueError, match="at most"):
        words.answer(np.zeros((1, limit + 1), np.float32), np.array([limit + 1]))
    with pytest.raises(ValueError, match="NaN"):
        words.answer(np.full((1, 100), np.nan, np.float32), np.array([100]))
    with pytest.raises(ValueError, match="AUDIO_LEN"):
        words.answer(np.zeros((1, 100), np.float32), np.array([101]))
    # Too short to hold a word: answered, empty.
    assert from_wire(words.answer(np.zeros((1, 100), np.float32), np.array([100]))[0], 0.01) == []


def test_items_packed_into_one_window_are_heard_as_they_are_alone(words):
    """Several short items share Whisper's 30-s window; each word returns to its own item, with the
    item's own times, and no item hears its neighbours."""
    from pipeline.model.words import pack

    clips = [speech(text) for text in SENTENCES.values()] + [np.zeros(SAMPLE_RATE, np.float32),
                                                             np.zeros(0, np.float32)]
    assert pack([len(c) for c in clips]) == [[0, 1, 2, 3]]
    packed = [from_wire(a, max(len(c), 1) / SAMPLE_RATE) for a, c in zip(words.hear(clips), clips, strict=True)]
    for (kind, text), alone, together, clip in zip(SENTENCES.items(), [hear(words, c) for c in clips[:3]], packed,
                                                  clips, strict=False):
        said = " ".join(u.text for u in together)
        print(f"{kind}: packed WER {wer(text, said):.2f}: {said!r}")
        assert wer(text, said) <= wer(text, " ".join(u.text for u in alone)) + 0.1, said
        spoken = [w for u in together for w in u.words]
        assert spoken and spoken[-1].end_ms <= len(clip) * 1000 / SAMPLE_RATE + 1
        assert abs(spoken[0].start_ms - alone[0].words[0].start_ms) <= 300
    assert packed[3] == [] and packed[4] == []
    # Items too long to share a window each take their own.
    assert pack([20 * SAMPLE_RATE, 20 * SAMPLE_RATE, 0, 3 * SAMPLE_RATE, 40 * SAMPLE_RATE]) == [[0], [1, 3], [4]]


def test_a_text_emotion_net_of_ones_own_scores_the_valence_by_manifest(model_repository, tmp_path):
    """words.toml's [valence.net]: an ONNX classifier with a Hugging Face export's signature and its
    tokenizer.json, no code; an utterance's valence is its distribution's expected circumplex valence."""
    from pipeline.model.manifest import ManifestError
    from tests import model_kit

    repo = tmp_path / "models"
    (repo / "words" / "1").mkdir(parents=True)
    (repo / "words" / "1" / "whisper-tiny.en").symlink_to(model_repository / "words" / "1" / "whisper-tiny.en")
    model_kit.export_text_emotion(repo / "words" / "text")
    base = (model_repository / "words" / WORDS_MANIFEST).read_text().replace('kind = "vader"', 'kind = "net"')
    labels = ", ".join(f'"{x}"' for x in model_kit.TEXT_LABELS)
    (repo / "words" / WORDS_MANIFEST).write_text(
        base + f'\n[valence.net]\nfile = "text/text-emotion.onnx"\ntokenizer = "text/tokenizer.json"\n'
               f'labels = [{labels}]\n')
    mine = Words.from_manifest(repo / "words" / WORDS_MANIFEST, repo)
    assert mine.valence("This is terrible and awful.") < -0.2 < 0.2 < mine.valence("Thank you, wonderful!")
    assert mine.valence("I am calling about my order.") == pytest.approx(0.0, abs=0.05)
    (said,) = [hear(mine, speech(SENTENCES["negative"]))]
    assert said and all(u.valence < -0.2 for u in said)
    # A net whose inputs are not a text classifier's is refused by name, before anything is served.
    model_kit.export_face(repo / "words" / "text" / "text-emotion.onnx")
    with pytest.raises(ManifestError, match="valence.net: the net takes"):
        Words.from_manifest(repo / "words" / WORDS_MANIFEST, repo)
