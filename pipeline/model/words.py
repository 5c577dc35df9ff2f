"""The `words` model's work: each item's speech transcribed with word times (faster-whisper), grouped
into utterances as Whisper segments them, each with a valence (VADER). Runs inside Triton.

Whisper decodes 30-s windows one after another; an item is one participant's audio for one stretch of
a chunk (the worker sends its decode window at most), so a request's cost is bounded by its audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model import manifest as mf
from pipeline.model.words_manifest import TextEmotionNet, WordsManifest, load
from pipeline.shared.labels import DFEW_VALENCE
from pipeline.shared.wire import SAMPLE_RATE
from pipeline.shared.words import to_wire


def _whisper(folder: Path, compute_type: str, device: str) -> Any:
    from faster_whisper import WhisperModel

    kind, _, index = device.partition(":")
    return WhisperModel(str(folder), device="cuda" if kind == "cuda" else "cpu",
                        device_index=int(index or 0), compute_type=compute_type, cpu_threads=1, num_workers=1)


def sentences(words: list[tuple[float, float, str]]) -> list[list[tuple[float, float, str]]]:
    """A Whisper segment cut after each word that ends a sentence: a valence per sentence, not per
    30-s window of whatever Whisper grouped ("...last week. Thank you so much." is two)."""
    out: list[list[tuple[float, float, str]]] = [[]]
    for w in words:
        out[-1].append(w)
        if w[2].endswith((".", "?", "!")):
            out.append([])
    return [s for s in out if s]


class TextEmotion:
    """A user's text-emotion classifier: utterances to DFEW distributions, and their valence."""

    def __init__(self, spec: TextEmotionNet, file: Path, tokenizer: Path, device: str = "cpu") -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from pipeline.model.nets import providers, session_options

        self.spec, self.mapping = spec, spec.mapping()
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(max_length=spec.max_tokens)
        if self.tokenizer.padding is None:
            self.tokenizer.enable_padding()
        self.session = ort.InferenceSession(str(file), session_options(), providers=providers(device))
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = set(self.inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if "input_ids" not in self.inputs or unknown:
            raise ValueError(f"the net takes {self.inputs}: a text-emotion net takes input_ids and attention_mask "
                             "(token_type_ids optional)")
        outputs = [o.name for o in self.session.get_outputs()]
        if spec.output_name is not None and spec.output_name not in outputs:
            raise ValueError(f"output_name {spec.output_name!r} is not one of the net's outputs {outputs}")
        self.output = spec.output_name or outputs[0]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        from pipeline.model.nets import to_dfew

        if not texts:
            return np.zeros((0, len(DFEW_VALENCE)))
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
                "token_type_ids": np.zeros_like(ids)}
        (scores,) = self.session.run([self.output], {k: v for k, v in feed.items() if k in self.inputs})
        return to_dfew(scores, self.spec, self.mapping, f"valence.net {self.spec.file}")

    def valences(self, texts: list[str]) -> np.ndarray:
        return self.probabilities(texts) @ np.asarray(DFEW_VALENCE)


@dataclass
class Words:
    manifest: WordsManifest
    whisper: Any
    vader: Any
    text_net: TextEmotion | None = None

    @classmethod
    def from_manifest(cls, path: Path, repo: Path, device: str = "cpu") -> Words:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        m = load(path)
        folder = mf.resolve(path.parent, m.transcriber.folder, repo, "transcriber.folder", str(path))
        if not (folder / "model.bin").is_file():
            raise mf.ManifestError(f"{path}: transcriber.folder: {folder} holds no CTranslate2 model.bin "
                                   "(run `callstream models build`)")
        net = m.valence.net
        text_net = None
        if net is not None:
            where = str(path)
            file = mf.resolve(path.parent, net.file, repo, "valence.net.file", where)
            tokenizer = mf.resolve(path.parent, net.tokenizer, repo, "valence.net.tokenizer", where)
            try:
                text_net = TextEmotion(net, file, tokenizer, device)
            except Exception as exc:   # the file, the tokenizer or the net's signature: named, not a trace
                raise mf.ManifestError(f"{path}: valence.net: {exc}") from None
        return cls(m, _whisper(folder, m.transcriber.compute_type, device), SentimentIntensityAnalyzer(), text_net)

    def valence(self, text: str) -> float:
        if not text.strip():
            return 0.0
        if self.text_net is not None:
            return float(np.clip(self.text_net.valences([text])[0], -1.0, 1.0))
        return float(self.vader.polarity_scores(text)["compound"])

    def transcribe(self, audio: np.ndarray) -> list[tuple[float, float, str]]:
        """Every word Whisper hears in the audio: (start s, end s, word)."""
        t = self.manifest.transcriber
        segments, _ = self.whisper.transcribe(
            np.ascontiguousarray(audio, np.float32), language=t.language, beam_size=t.beam_size,
            word_timestamps=True, vad_filter=t.vad_filter, vad_parameters={"speech_pad_ms": t.vad_pad_ms},
            condition_on_previous_text=False)
        return [(float(w.start), float(w.end), w.word.strip()) for s in segments for w in (s.words or [])
                if w.word.strip()]

    def utterances(self, words: list[tuple[float, float, str]]) -> list[tuple[float, float, str, float,
                                                                          list[tuple[float, float, str]]]]:
        """(start s, end s, text, valence, words) per sentence."""
        out = []
        for sentence in sentences(words):
            text = " ".join(w for _, _, w in sentence)
            out.append((sentence[0][0], sentence[-1][1], text, self.valence(text), sentence))
        return out

    def hear(self, items: list[np.ndarray]) -> list[str]:
        """One wire answer (shared/words.py) per item. Whisper's encoder always reads 30 s, so short items
        are packed into one window, a second of silence between them, and each word goes back to the
        item that holds its midpoint: a worker's 5-s stretches cost one pass per window, not one each."""
        words: list[list[tuple[float, float, str]]] = [[] for _ in items]
        for window in pack([len(a) for a in items]):
            audio = np.concatenate([np.concatenate([items[i], np.zeros(GAP, np.float32)]) for i in window])
            starts = np.cumsum([0] + [len(items[i]) + GAP for i in window])
            for a, b, w in self.transcribe(audio):
                k = int(np.searchsorted(starts, (a + b) / 2 * SAMPLE_RATE, side="right")) - 1
                item = window[min(k, len(window) - 1)]
                offset, length = starts[min(k, len(window) - 1)] / SAMPLE_RATE, len(items[item]) / SAMPLE_RATE
                if (a + b) / 2 - offset < length:   # not a word Whisper placed in the silence between items
                    words[item].append((max(0.0, a - offset), min(length, b - offset), w))
        return [to_wire(self.utterances(w)) for w in words]

    def answer(self, audio: np.ndarray, lengths: np.ndarray) -> list[str]:
        """One wire answer per item of one request: AUDIO (N, T) float32 at 16 kHz, AUDIO_LEN (N,)."""
        return self.hear(self.items(audio, lengths))

    def items(self, audio: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """A request's items, checked: one bad request is refused alone, with a reason."""
        audio = np.asarray(audio, np.float32)
        lengths = np.asarray(lengths).reshape(-1).astype(np.int64)
        if audio.ndim != 2 or len(lengths) != len(audio):
            raise ValueError(f"inconsistent inputs: AUDIO {audio.shape}, AUDIO_LEN {lengths.shape}")
        if (lengths < 0).any() or (lengths > audio.shape[1]).any():
            raise ValueError(f"AUDIO_LEN outside 0..{audio.shape[1]}")
        limit = int(self.manifest.max_audio_s * SAMPLE_RATE)
        if (lengths > limit).any():
            raise ValueError(f"an item of {lengths.max() / SAMPLE_RATE:.0f} s: this model takes at most "
                             f"{self.manifest.max_audio_s:.0f} s (words.toml max_audio_s)")
        if not np.isfinite(audio).all():
            raise ValueError("AUDIO holds NaN or infinite samples")
        # Too short to hold a word: nothing to hear (an empty item packs as nothing).
        return [a[:n] if n >= SAMPLE_RATE // 10 else a[:0] for a, n in zip(audio, lengths, strict=True)]


GAP = SAMPLE_RATE            # a second of silence between packed items
WINDOW = 28 * SAMPLE_RATE    # packed items fill at most this of Whisper's 30-s window


def pack(lengths: list[int]) -> list[list[int]]:
    """Items (by index) grouped into windows of at most WINDOW samples with their gaps, in order; an
    item longer than that is a window of its own (Whisper walks it 30 s at a time). Empty items: none."""
    windows: list[list[int]] = []
    used = WINDOW + 1
    for i, n in enumerate(lengths):
        if n == 0:
            continue
        if n + GAP > WINDOW or used + n + GAP > WINDOW:
            windows.append([i])
            used = n + GAP
        else:
            windows[-1].append(i)
            used += n + GAP
    return windows
