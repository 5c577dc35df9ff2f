"""The whole per-item analysis in one process: face detection, expression, voice, fusion.

The `emotion` Triton model runs this directly instead of calling three other models over BLS: every
BLS hop copied each request's frames, crops and audio into another stub process and back, and on a
CPU server those copies and the extra processes cost as much as a model. The benchmark's bare limit
runs the same object, so the two measure the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model import artifacts, voice
from pipeline.model import manifest as mf
from pipeline.model.blazeface import BlazeFace
from pipeline.model.crops import Detections, face_crop
from pipeline.model.mtcnn import MTCNN
from pipeline.model.nets import FaceExpression, NoSuchOutput, VoiceEmotion
from pipeline.shared.fusion import DEFAULT_FUSION, FaceAggregate, FusionParams, faces_per_item, fuse_items
from pipeline.shared.labels import DFEW_LABELS

OUTPUT_DTYPES = {"PROBS": np.float32, "CONFIDENCE": np.float32, "FACE_FOUND": bool, "SPEECH_FOUND": bool,
                 "FACE_SCORE": np.float32, "AROUSAL": np.float32, "SPEECH_RATIO": np.float32,
                 "FACE_PROBS": np.float32, "FACE_COUNT": np.int32,
                 "VOICE_PROBS": np.float32, "VOICE_CUES": np.float32, "VOICE_DIMS": np.float32}


@dataclass
class Analyzer:
    detector: BlazeFace | MTCNN
    faces: list[FaceExpression]
    vad: Any
    voice_net: VoiceEmotion | None = None
    fusion: FusionParams = DEFAULT_FUSION
    speech_threshold: float = voice.SPEECH_THRESHOLD
    vad_run_windows: int = voice.RUN_WINDOWS
    device: str = "cpu"
    manifest: mf.Manifest | None = field(default=None, repr=False)

    @property
    def min_speech_ratio(self) -> float:
        return self.fusion.min_speech_ratio

    @classmethod
    def load(cls, repo: Path, device: str = "cpu", model: str = "emotion", **overrides: Any) -> Analyzer:
        """The nets a model of the repository declares in its manifest (`<repo>/<model>/manifest.toml`)."""
        return cls.from_manifest(Path(repo) / model / mf.MANIFEST, Path(repo), device, **overrides)

    @classmethod
    def from_manifest(cls, path: Path, repo: Path, device: str = "cpu", **overrides: Any) -> Analyzer:
        """Every net a manifest names, loaded and ready; `overrides` replace fields (a benchmark's other
        detector, say). Raises ManifestError naming the file and key."""
        m = mf.load(path)
        where = path.parent

        def at(relative: str, key: str) -> Path:
            return mf.resolve(where, relative, repo, key, str(path))

        def loaded(key: str, make: Any) -> Any:
            try:
                return make()
            except mf.ManifestError:
                raise
            except NoSuchOutput as exc:
                raise mf.ManifestError(f"{path}: {key.rsplit('.', 1)[0]}.output_name: {exc}") from None
            except (ValueError, OSError, RuntimeError) as exc:
                raise mf.ManifestError(f"{path}: {key}: {exc}") from None

        faces = [loaded(f"face[{i}].file", lambda f=f, i=i: FaceExpression.load(f, at(f.file, f"face[{i}].file"),
                                                                                  device))
                 for i, f in enumerate(m.face)]
        folder = at(m.detector.folder, "detector.folder")
        d = m.detector
        detector = loaded("detector.folder", lambda: artifacts.detector(folder, d.min_face_px, device, faces[0].crop,
                                                                          d.kind, d.range))
        vad = loaded("voice.vad", lambda: artifacts.vad_file(at(m.voice.vad, "voice.vad"), device))
        net = m.voice.emotion
        voice_net = None if net is None else loaded(
            "voice.emotion.file", lambda: VoiceEmotion.load(net, at(net.file, "voice.emotion.file"), device))
        fields: dict[str, Any] = dict(speech_threshold=m.voice.speech_threshold, device=device, manifest=m)
        return cls(detector, faces, vad, voice_net, m.fusion_params(), **{**fields, **overrides})

    @property
    def voice_window_ms(self) -> int:
        """The audio context the voice-emotion net wants around a segment (0: no voice net)."""
        return self.voice_net.window_ms if self.voice_net is not None else 0

    def detect(self, r: Request) -> tuple[np.ndarray, Detections]:
        """Each real frame's most confident face: the real frames and their detections."""
        flat = r.frames.reshape((-1,) + r.frames.shape[2:])
        if not r.mask.any():
            return flat[:0], self.detector.empty(0)
        flat = np.ascontiguousarray(flat[r.mask.reshape(-1)])
        return flat, self.detector.detect(flat)

    def expressions(self, frames: list[np.ndarray], found: list[Detections]) -> list[np.ndarray]:
        """DFEW probabilities per frame (zeros where no face): each face net in one pass for all
        requests, several nets pooled as a weighted geometric mean (their manifest weights)."""
        probs = [np.zeros((len(d.scores), len(DFEW_LABELS)), np.float32) for d in found]
        faced = [d.scores > 0 for d in found]
        if not sum(int(f.sum()) for f in faced):
            return probs
        outs = []
        for k, net in enumerate(self.faces):
            if k == 0:   # the detector cut these crops for the first net
                crops = [d.crops[f] for d, f in zip(found, faced, strict=True)]
            else:
                crops = [np.stack([face_crop(fr[i], d.boxes[i], net.crop, d.eyes[i]) for i in np.flatnonzero(f)])
                         if f.any() else np.zeros(net.crop.shape(0), np.uint8)
                         for fr, d, f in zip(frames, found, faced, strict=True)]
            outs.append(net.probs(np.concatenate(crops)))
        pooled = outs[0] if len(outs) == 1 else pool([(net.spec.weight, o) for net, o in zip(self.faces, outs,
                                                                                              strict=True)])
        start = 0
        for p, f in zip(probs, faced, strict=True):
            p[f] = pooled[start:start + int(f.sum())]
            start += int(f.sum())
        return probs

    def voices(self, requests: list[Request]) -> list[Voices]:
        """Each request's voice results. Silero's sequential windows are run once for the items of all
        requests together, which costs about what one request's run does; the voice net runs only on
        items with speech (zeros elsewhere)."""
        lengths = [r.lengths.reshape(-1) for r in requests]
        longest = max((r.audio.shape[1] for r in requests), default=0)
        audio = np.zeros((sum(len(n) for n in lengths), longest), np.float32)
        row = 0
        for r, n in zip(requests, lengths, strict=True):
            audio[row:row + len(n), :r.audio.shape[1]] = r.audio
            row += len(n)
        every = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        ratio = np.zeros(len(every), np.float32)
        arousal, cues = np.full(len(every), -1.0, np.float32), np.zeros((len(every), 3), np.float32)
        if (every > 0).any():
            ratio = voice.speech_ratio(self.vad, audio, every, self.speech_threshold, self.device,
                                       self.vad_run_windows)
            arousal, cues = voice.prosodies(audio, every)
        heard = np.zeros((len(every), len(DFEW_LABELS)), np.float32)
        dims = np.full((len(every), 3), np.nan, np.float32)
        if self.voice_net is not None:
            windows = [w for r in requests for w in r.voice_windows()]
            net = self.voice_net.spec
            run = [i for i, w in enumerate(windows) if ratio[i] >= self.min_speech_ratio
                   and len(w) >= net.min_window_s * voice.SAMPLE_RATE]
            if run:
                heard[run], dims[run] = self.voice_net.answer([windows[i] for i in run])
        out, row = [], 0
        for n in lengths:
            part = slice(row, row + len(n))
            out.append(Voices(ratio[part], arousal[part], heard[part], cues[part], dims[part]))
            row += len(n)
        return out

    def run(self, frames: np.ndarray, mask: np.ndarray, audio: np.ndarray, lengths: np.ndarray,
            voice: np.ndarray | None = None, voice_lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The `emotion` model's outputs for one request (see its config.pbtxt)."""
        return self.run_many([Request.of(frames, mask, audio, lengths, voice, voice_lengths)])[0]

    def run_many(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        """Outputs for requests the dynamic batcher put together: detection per request (frames of
        different requests may differ in size), expression and voice in one pass for all."""
        found = [self.detect(r) for r in requests]
        probs = self.expressions([f for f, _ in found], [d for _, d in found])
        voices = self.voices(requests)
        return [self._outputs(faces_per_item(p, d.scores, r.mask, self.detector.trusted), v)
                for r, (_, d), p, v in zip(requests, found, probs, voices, strict=True)]

    def _outputs(self, faces: list[FaceAggregate], v: Voices) -> dict[str, np.ndarray]:
        n = len(faces)
        ratio, arousal, heard = v.ratio, v.arousal, v.heard
        zeros = np.zeros(len(DFEW_LABELS))
        out: dict[str, list] = {k: [] for k in OUTPUT_DTYPES}
        voice_probs = [h if h.any() else None for h in heard]
        for (face_probs, face_score, face_count), fused in zip(
                faces, fuse_items(faces, ratio, arousal, voice_probs, self.fusion), strict=True):
            out["PROBS"].append(fused.probs if fused.probs is not None else zeros)
            out["CONFIDENCE"].append([fused.confidence])
            out["FACE_FOUND"].append([fused.face_found])
            out["SPEECH_FOUND"].append([fused.speech_found])
            out["FACE_SCORE"].append([face_score])
            # The face evidence before fusion: pieces of one grid cell from two chunks merge from these.
            out["FACE_PROBS"].append(face_probs if face_probs is not None else zeros)
            out["FACE_COUNT"].append([face_count])
        out["AROUSAL"] = arousal.reshape(-1, 1).tolist()
        out["SPEECH_RATIO"] = ratio.reshape(-1, 1).tolist()
        out["VOICE_PROBS"] = heard.tolist()
        out["VOICE_CUES"] = v.cues.tolist()
        out["VOICE_DIMS"] = v.dims.tolist()
        return {k: np.asarray(v, dtype=OUTPUT_DTYPES[k]).reshape(n, -1) for k, v in out.items()}


@dataclass
class Voices:
    """One request's voice results per item: speech ratio, arousal (-1: no audio), the voice net's
    DFEW probabilities (zeros: not run), the prosodic cues as z-scores (energy, pitch variability,
    rate) and a dimensional voice net's valence, arousal, dominance (NaN: not run or not answered)."""
    ratio: np.ndarray
    arousal: np.ndarray
    heard: np.ndarray
    cues: np.ndarray
    dims: np.ndarray


@dataclass
class Request:
    """One request's inputs, checked: every later step may index them without surprises."""
    frames: np.ndarray
    mask: np.ndarray
    audio: np.ndarray
    lengths: np.ndarray
    voice: np.ndarray | None = None           # (N, T) VOICE_WINDOW: each item's audio context for the voice net
    voice_lengths: np.ndarray | None = None   # (N,) VOICE_LEN

    @classmethod
    def of(cls, frames: Any, mask: Any, audio: Any, lengths: Any, voice: Any = None,
           voice_lengths: Any = None) -> Request:
        frames, mask = np.asarray(frames), np.asarray(mask).astype(bool)
        audio, lengths = np.asarray(audio, np.float32), np.asarray(lengths).reshape(-1).astype(np.int64)
        n = len(frames)
        if frames.ndim != 5 or mask.shape != frames.shape[:2] or audio.ndim != 2 or len(audio) != n \
                or len(lengths) != n:
            raise ValueError(f"inconsistent inputs: FRAMES {frames.shape}, FRAME_MASK {mask.shape}, "
                             f"AUDIO {audio.shape}, AUDIO_LEN {lengths.shape}")
        if (lengths < 0).any() or (lengths > audio.shape[1]).any():
            raise ValueError(f"AUDIO_LEN outside 0..{audio.shape[1]}")
        if (voice is None) != (voice_lengths is None):
            raise ValueError("VOICE_WINDOW and VOICE_LEN come together")
        if voice is not None:
            voice = np.asarray(voice, np.float32)
            voice_lengths = np.asarray(voice_lengths).reshape(-1).astype(np.int64)
            if voice.ndim != 2 or len(voice) != n or len(voice_lengths) != n:
                raise ValueError(f"VOICE_WINDOW {voice.shape} and VOICE_LEN {voice_lengths.shape} for {n} items")
            if (voice_lengths < 0).any() or (voice_lengths > voice.shape[1]).any():
                raise ValueError(f"VOICE_LEN outside 0..{voice.shape[1]}")
        return cls(frames, mask, audio, lengths, voice, voice_lengths)

    def voice_windows(self) -> list[np.ndarray]:
        """Each item's audio for the voice-emotion net: its VOICE_WINDOW, or its own audio from a client
        that sends no window (a segment's worth: less context, still a result)."""
        if self.voice is None or self.voice_lengths is None:
            return [a[:n] for a, n in zip(self.audio, self.lengths, strict=True)]
        return [a[:n] for a, n in zip(self.voice, self.voice_lengths, strict=True)]


def pool(weighted: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Several nets' (N, 7) distributions as one: a weighted geometric mean, renormalised."""
    logp = sum(w * np.log(np.maximum(p.astype(np.float64), 1e-12)) for w, p in weighted)
    e = np.exp(logp - np.max(logp, axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
