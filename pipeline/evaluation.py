"""`callstream models eval` on labelled clips or photographs: WAR and UAR per modality and per model
version, measured on the model as Triton serves it.

A clip (video, audio, or both) is cut as the worker cuts a one-participant chunk (1-s segments, the
voice window the model asks for) and sent to the served model version through the worker's own
client; its segments' evidence is merged as the writer merges a cell's pieces and read three ways:
the face alone, the voice alone (the voice-emotion net, or the arousal prior where the model has
none), and fused. WAR is accuracy over the clips a modality gave a label for, UAR the mean of the
per-class recalls over the true classes present, as DFEW reports them; clips without a face or without
speech are counted, not scored, for that modality. A photograph is one frame scaled as the decoder
scales frames, through the face path; one where no face is found is counted, not scored.

Labels come from a folder per label, a CSV (`path,label`), or the file-name conventions of RAVDESS
(`03-01-05-01-02-01-12.mp4`: the third field is the emotion) and CREMA-D (`1001_DFA_ANG_XX.wav`).

With `--words` each clip's speech also goes through the served `words` model, placed on the segments as
the worker places it: the voice and the fused label are then read with and without the words' valence,
and where the CSV has a third column (`path,label,transcript`) the word error rate is printed, summed
over the clips (edits over reference words) as ASR corpora report it.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.contract import ChunkMeta
from pipeline.shared.fusion import Evidence, FusionParams, fuse, fuse_evidence, merge
from pipeline.shared.labels import DFEW_LABELS, canonical
from pipeline.shared.wire import SAMPLE_RATE
from pipeline.shared.words import said_in
from pipeline.worker.transcript import ChunkWords
from pipeline.worker.triton_client import EmotionClient, Item
from pipeline.worker.words_client import WordsClient

CLIP_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".ts", ".wav", ".mp3", ".flac", ".ogg",
                 ".opus", ".m4a", ".aac"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MODALITIES = ("face", "voice", "fused")
WITH_WORDS = ("face", "voice", "voice+words", "fused", "fused+words")
STRETCH_S = 30.0   # a clip's speech goes to the words model this much at a time, as a worker's decode window
# RAVDESS: modality-channel-EMOTION-intensity-statement-repetition-actor; calm has no DFEW column.
RAVDESS = re.compile(r"^\d\d-\d\d-(0[1-8])-\d\d-\d\d-\d\d-\d\d$")
RAVDESS_CODES = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear",
                 "07": "disgust", "08": "surprise"}
# CREMA-D: actor_sentence_EMOTION_level.
CREMA_D = re.compile(r"^\d{4}_[A-Z]{3}_(ANG|DIS|FEA|HAP|NEU|SAD)_[A-Z]{1,2}$")
CREMA_D_CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}


class DatasetError(ValueError):
    """A labelled set that cannot be read: says which file or folder and why."""


def transcripts(path: Path) -> dict[Path, str]:
    """Reference transcripts from a CSV's third column (`path,label,transcript`), by file as load() names it."""
    path = Path(path)
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 3 and row[2].strip() and row[0].strip().lower() not in ("path", "file", "image", "clip"):
                p = Path(row[0].strip())
                out[p if p.is_absolute() else path.parent / p] = row[2].strip()   # as load() names it
    return out


def tokens(text: str) -> list[str]:
    """Words for scoring: lower case, punctuation gone (Whisper writes it, references often do not)."""
    return re.findall(r"[a-z0-9']+", text.lower())


def edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word-level edit distance, reference words): WER is their ratio, summed over a corpus."""
    r, h = tokens(reference), tokens(hypothesis)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d = d, [i] + [0] * len(h)
        for j in range(1, len(h) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
    return d[len(h)], len(r)


def label_from_name(path: Path) -> str | None:
    """The emotion a RAVDESS or CREMA-D file name encodes (DFEW name; calm as neutral), else None."""
    stem = path.stem
    if m := RAVDESS.match(stem):
        return canonical(RAVDESS_CODES[m.group(1)])
    if m := CREMA_D.match(stem):
        return CREMA_D_CODES[m.group(1)]
    return None


OUTSIDE_DFEW = {"contempt"}   # a known class without a DFEW column: its files are left out


def label_of(name: str, where: str) -> str | None:
    label = canonical(name)
    if label is None and name.strip().lower() not in OUTSIDE_DFEW:
        raise DatasetError(f"{where}: label {name!r} is not one of {', '.join(DFEW_LABELS)} (or a common alias)")
    return label


def _media(path: Path) -> bool:
    return path.suffix.lower() in CLIP_SUFFIXES | IMAGE_SUFFIXES


def load(path: Path) -> list[tuple[Path, str]]:
    """(file, DFEW label) pairs of a labelled set, in a stable order."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if path.is_file():
        items = []
        with open(path, newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or row[0].strip().lower() in ("path", "file", "image", "clip"):
                    continue
                if len(row) < 2:
                    raise DatasetError(f"{path}:{n}: expected path,label")
                p = Path(row[0].strip())
                label = label_of(row[1], f"{path}:{n}")
                if label:
                    items.append((p if p.is_absolute() else path.parent / p, label))
        return items
    named = [(f, label_from_name(f)) for f in sorted(path.rglob("*")) if f.is_file() and _media(f)]
    if named and all(label for _, label in named):
        return [(f, label) for f, label in named if label]
    items = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        label = label_of(folder.name, str(folder))
        if label:
            items += [(f, label) for f in sorted(folder.rglob("*")) if f.is_file() and _media(f)]
    if not items:
        raise DatasetError(f"{path}: no labelled media (a folder per label, a CSV path,label, or RAVDESS / "
                           "CREMA-D file names)")
    return items


@dataclass
class Scores:
    """One modality's results: a confusion matrix over the clips it labelled, and those it could not."""
    confusion: dict[str, Counter] = field(default_factory=dict)
    unlabelled: int = 0

    def add(self, truth: str, predicted: str | None) -> None:
        if predicted is None:
            self.unlabelled += 1
        else:
            self.confusion.setdefault(truth, Counter())[predicted] += 1

    @property
    def scored(self) -> int:
        return sum(sum(c.values()) for c in self.confusion.values())

    def war(self) -> float | None:
        """Weighted average recall: the share of scored clips labelled correctly (accuracy)."""
        n = self.scored
        return sum(c[t] for t, c in self.confusion.items()) / n if n else None

    def recall(self) -> dict[str, float]:
        return {t: c[t] / sum(c.values()) for t, c in self.confusion.items()}

    def uar(self) -> float | None:
        """Unweighted average recall: the mean of per-class recalls over the true classes present."""
        r = self.recall()
        return float(np.mean(list(r.values()))) if r else None


@dataclass
class Served:
    """A model version as Triton serves it: the worker's client, and what the model's config says."""
    client: EmotionClient
    name: str
    version: str
    fusion: FusionParams
    words: WordsClient | None = None

    @classmethod
    async def connect(cls, url: str, model: str, wait_s: float = 60.0, words_model: str | None = None) -> Served:
        client = EmotionClient(url, model)
        words = WordsClient(url, words_model) if words_model else None
        try:
            await client.wait_ready(wait_s)
            name, version, fusion = await client.identity()
            if words is not None:
                await words.wait_ready(wait_s)
                await words.identity()
        except BaseException:
            await client.close()
            if words is not None:
                await words.close()
            raise
        return cls(client, name, version, fusion, words)

    async def close(self) -> None:
        await self.client.close()
        if self.words is not None:
            await self.words.close()

    @property
    def voice_net(self) -> bool:
        """Whether the model has a voice-emotion net (it asks for a voice window only then)."""
        return self.client.voice_window_ms > 0


async def clip_evidence(model: Served, path: Path, fps: float, frame_width: int, segment_ms: int,
                        ffmpeg_bin: str) -> tuple[Evidence, str]:
    """A clip as one participant's one-chunk call through the served model: its segments' merged
    evidence, and what the words model heard ("" without one)."""
    from pipeline.media.decode import decode
    from pipeline.worker.process import decoded_items

    try:
        decoded = await asyncio.to_thread(decode, ffmpeg_bin, path, fps, frame_width)
    except Exception as exc:  # the decoder raises its own types for every kind of unreadable file
        raise DatasetError(f"{path}: not a media file ffmpeg can decode ({str(exc).splitlines()[0][:200]})") from None
    media = "av" if len(decoded.frames) and decoded.audio.size else ("video" if len(decoded.frames) else "audio")
    meta = ChunkMeta("eval", 0, 0, True, participant_id="subject", role="customer", media=media)
    keys, items = decoded_items(meta, decoded, segment_ms, window_ms=model.client.voice_window_ms)
    pieces = await model.client.infer(items) if items else []
    heard = ""
    if model.words is not None and decoded.audio.size:
        said = await hear(model.words, decoded.audio[0])
        utterances = said.said.get("subject", [])
        heard = " ".join(u.text for u in utterances)
        pieces = [dataclasses.replace(e, word_ms=s.ms, word_valence=s.valence)
                  for (_, seg), e in zip(keys, pieces, strict=True)
                  for s in [said_in(utterances, seg.start_ms, seg.end_ms)]]
    return (merge(pieces) if pieces else Evidence(0, 0, 0.0, None, 0, 0.0, None)), heard


async def hear(words: WordsClient, audio: np.ndarray) -> ChunkWords:
    """A clip's speech through the words model a stretch at a time, kept as the worker keeps it."""
    said = ChunkWords(0, end_of_call=True)
    end_ms = len(audio) * 1000 // SAMPLE_RATE
    step = int(STRETCH_S * 1000)
    for stop in [*range(step, end_ms, step), end_ms]:
        start, stop = said.stretch("subject", stop)
        (utterances,) = await words.transcribe([audio[start * SAMPLE_RATE // 1000:stop * SAMPLE_RATE // 1000]])
        said.take("subject", [u.shifted(start) for u in utterances], start, stop, final=stop == end_ms)
    return said


def predictions(e: Evidence, model: Served) -> dict[str, str | None]:
    """The label each modality gives a clip's merged evidence (None: it saw nothing to label); with the
    words model, voice and fused once without the words and once with them."""
    fusion = model.fusion
    speech = e.audio_ms > 0 and e.speech_ratio >= fusion.min_speech_ratio
    face = DFEW_LABELS[int(np.argmax(e.face_probs))] if e.face_probs is not None else None
    bare = dataclasses.replace(e, word_ms=0, word_valence=None)
    # The voice's evidence: the net's distribution where one is served, else the prosody's arousal.
    arousal, probs = (None, e.voice_probs) if model.voice_net else (e.arousal, None)
    heard = speech and (probs is not None or arousal is not None)
    voice = fuse(None, True, arousal, probs, fusion).label if heard else None
    with_words = fuse(None, True, arousal, probs, fusion, e.word_valence).label if heard else None
    out = {"face": face, "voice": voice, "fused": fuse_evidence(bare, fusion).label}
    if model.words is not None:
        out.update({"voice+words": with_words, "fused+words": fuse_evidence(e, fusion).label})
    return out


async def evaluate_clips(model: Served, items: list[tuple[Path, str]], fps: float, frame_width: int,
                         segment_ms: int, ffmpeg_bin: str, references: dict[Path, str] | None = None) -> dict[str, Any]:
    modalities = WITH_WORDS if model.words is not None else MODALITIES
    scores = {m: Scores() for m in modalities}
    no_face = no_speech = 0
    per_clip = []
    errors = words = referenced = 0
    for path, truth in items:
        e, heard = await clip_evidence(model, path, fps, frame_width, segment_ms, ffmpeg_bin)
        got = predictions(e, model)
        faceless = e.faces == 0
        silent = not (e.audio_ms > 0 and e.speech_ratio >= model.fusion.min_speech_ratio)
        no_face += faceless
        no_speech += silent
        for m in modalities:
            scores[m].add(truth, got[m])
        clip: dict[str, Any] = {"path": path, "truth": truth, **{m: got[m] for m in modalities},
                                "face_found": not faceless, "speech_found": not silent}
        reference = (references or {}).get(path)
        if model.words is not None and reference is not None:
            wrong, spoken = edits(reference, heard)
            errors, words, referenced = errors + wrong, words + spoken, referenced + 1
            clip.update(heard=heard, wer=wrong / max(spoken, 1))
        per_clip.append(clip)
    return {"clips": len(items), "no_face": no_face, "no_speech": no_speech, "scores": scores, "per_clip": per_clip,
            "modalities": modalities, "wer": (errors / words if words else None, referenced, words)}


def per_clip_lines(result: dict[str, Any]) -> list[str]:
    """One line per clip: its truth and each modality's label ('-': that modality gave none)."""
    modalities = result.get("modalities", MODALITIES)
    lines = [f"  {'clip':<40} {'truth':<9}" + "".join(f" {m:<11}" for m in modalities)]
    for c in result["per_clip"]:
        name = str(c["path"].name)
        name = name if len(name) <= 40 else "..." + name[-37:]
        line = f"  {name:<40} {c['truth']:<9}" + "".join(f" {c[m] or '-':<11}" for m in modalities)
        if "wer" in c:
            line += f" WER {c['wer']:.2f}: {c['heard']!r}"
        lines.append(line)
    return lines


def report(name: str, result: dict[str, Any]) -> list[str]:
    """Printable lines: the summary per modality, then each modality's confusion matrix."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [f"{name}: {result['clips']} clips, {result['no_face']} without a face, "
             f"{result['no_speech']} without speech",
             f"  {'modality':<11} {'scored':>4} {'WAR':>7} {'UAR':>7} {'no label':>9}"]
    for m, s in result["scores"].items():
        lines.append(f"  {m:<11} {s.scored:>4} {pct(s.war()):>7} {pct(s.uar()):>7} {s.unlabelled:>9}")
    lines.append("  (a clip a modality gave no label, no face or no speech, is counted under 'no label' and left "
                 "out of that modality's WAR and UAR)")
    wer, referenced, words = result.get("wer", (None, 0, 0))
    if wer is not None:
        lines.append(f"  words: WER {wer:.3f} over {referenced} clips with a reference transcript ({words} words)")
    for m, s in result["scores"].items():
        if not s.scored:
            continue
        lines.append(f"  {m}: truth / predicted" + "".join(f"{label[:7]:>9}" for label in DFEW_LABELS) + "   recall")
        recall = s.recall()
        for t in DFEW_LABELS:
            if t in s.confusion:
                row = s.confusion[t]
                cells = "".join(f"{row.get(p, 0):>9}" for p in DFEW_LABELS)
                lines.append(f"    {t:<24}{cells}   {recall[t]:.2f}")
    return lines


# Labelled photographs: the face path alone (`models eval` on a folder of images).

def split(items: list[tuple[Path, str]]) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """A labelled set's (clips, photographs): clips go through the whole path, photographs the face path."""
    return ([(p, label) for p, label in items if p.suffix.lower() not in IMAGE_SUFFIXES],
            [(p, label) for p, label in items if p.suffix.lower() in IMAGE_SUFFIXES])


def photo_frame(path: Path, frame_width: int) -> np.ndarray:
    """A photograph as one sampled frame: RGB, scaled as the decoder scales frames (area filter)."""
    from PIL import Image

    from pipeline.media.ffargs import target_size

    with Image.open(path) as img:
        rgb = img.convert("RGB")
        size = target_size(rgb.width, rgb.height, frame_width)
        return np.asarray(rgb.resize(size, Image.Resampling.BOX) if size != rgb.size else rgb)


async def score_images(model: Served, items: list[tuple[Path, str]], frame_width: int) -> dict[str, Any]:
    if not items:
        raise DatasetError("no labelled images found")
    faces = Scores()
    for path, truth in items:
        (e,) = await model.client.infer([Item(photo_frame(path, frame_width)[None], np.zeros(0, np.float32))])
        faces.add(truth, DFEW_LABELS[int(np.argmax(e.face_probs))] if e.face_probs is not None else None)
    recall = faces.recall()
    return {"images": len(items), "accuracy": faces.war(), "face_detected": faces.scored / len(items),
            "recall": recall, "mean_recall": faces.uar(), "confusion": {t: dict(c) for t, c in faces.confusion.items()}}


def image_lines(result: dict[str, Any]) -> list[str]:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    out = [f"images {result['images']}  accuracy {pct(result['accuracy'])}  mean recall {pct(result['mean_recall'])}"
           f"  faces found {result['face_detected']:.0%} (an image without one is counted, not scored)"]
    header = "truth / predicted"
    out.append(f"{header:<18}" + "".join(f"{label[:7]:>8}" for label in DFEW_LABELS) + "   recall")
    for t in DFEW_LABELS:
        if t in result["confusion"]:
            row = result["confusion"][t]
            cells = "".join(f"{row.get(p, 0):>8}" for p in DFEW_LABELS)
            out.append(f"{t:<18}{cells}   {result['recall'][t]:.2f}")
    return out


async def evaluate_images(model: Served, items: list[tuple[Path, str]], name: str, frame_width: int) -> list[str]:
    return [f"{name}:", *image_lines(await score_images(model, items, frame_width))]
