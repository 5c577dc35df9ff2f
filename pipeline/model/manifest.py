"""The model manifest: which nets the `emotion` model composes and how each one is fed and read.

A TOML file beside the model's `config.pbtxt`. Everything a net needs that is not in its file (input
size, colour, layout, scaling, the order and meaning of its outputs) is declared here, so bringing a
stronger model is a configuration step: the same code runs the built-in nets and a user's. Errors name
the file and the key (`manifest.toml: face[0].labels: ...`), and a manifest that loads is complete:
every label maps onto the seven DFEW columns or is explicitly dropped, every file lies inside the
model repository.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.shared.fusion import FusionParams
from pipeline.shared.labels import DFEW_LABELS, canonical

# Python 3.10 (the official Triton image's) has no tomllib: the same parser ships as the package tomli.
tomllib = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")

MANIFEST = "manifest.toml"
DROP = "drop"


class ManifestError(ValueError):
    """A manifest or one of its files is wrong: says which file, which key, and why."""


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt `input_sise` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Labelled(_Strict):
    """A net's outputs: one class per output column, in the net's own order, and where each goes."""
    file: str = Field(description="path relative to the manifest, inside the model repository")
    format: Literal["onnx", "torchscript"] = Field(default="onnx", description="how the file is run: ONNX Runtime "
                                                   "or TorchScript")
    output: Literal["logits", "probabilities", "valence_arousal"] = Field(
        default="logits", description="what the output holds: class logits (softmaxed here), class probabilities, "
                                      "or (voice nets only) valence and arousal")
    output_name: str | None = Field(default=None, min_length=1, max_length=200,
                                    description="the net's output to read, by name (ONNX); default: its first")
    labels: tuple[str, ...] = Field(default=(), description="the net's classes in its output order")
    # A class that is not one of the seven (or a common alias): fold it into a DFEW column, or "drop"
    # it and renormalise the rest. Also overrides an alias (e.g. calm = "drop").
    label_map: dict[str, str] = Field(default_factory=dict, description="class -> DFEW column (or a common alias) "
                                      "or \"drop\", for classes that are not one of the seven or to override an "
                                      "alias; names match without regard to case")
    weight: float = Field(default=1.0, gt=0, description="this net's exponent in the fusion (its trust)")

    @model_validator(mode="after")
    def _labels_map(self) -> Labelled:
        if self.output_name is not None and self.format != "onnx":
            raise ValueError("output_name: only an ONNX net's outputs have names (a TorchScript net's first "
                             "output is read)")
        if self.output != "valence_arousal":
            if len(self.labels) < 2:
                raise ValueError("labels: a net that scores classes names at least two, in its output order")
            self.mapping()
        return self

    def mapping(self) -> np.ndarray:
        """(classes, 7) matrix: a net's probabilities times it give the DFEW columns (before the
        renormalisation that dropped classes need)."""
        # Class names are matched without regard to case, in labels and in label_map alike.
        folded = [name.casefold() for name in self.labels]
        if len(set(folded)) != len(folded):
            raise ValueError("labels repeat a name (names are compared without regard to case)")
        targets = {key.casefold(): (key, value) for key, value in self.label_map.items()}
        unknown = sorted(key for folded_key, (key, _) in targets.items() if folded_key not in folded)
        if unknown:
            raise ValueError(f"label_map names {unknown}, which are not in labels {list(self.labels)}")
        m = np.zeros((len(self.labels), len(DFEW_LABELS)), np.float32)
        for i, name in enumerate(self.labels):
            key, target = targets.get(name.casefold(), (name, None))
            if target is not None and target.strip().casefold() == DROP:
                continue
            if target is not None:
                column = canonical(target)
                if column is None:
                    raise ValueError(f"label_map.{key} = {target!r}: not a DFEW column ({', '.join(DFEW_LABELS)}, "
                                     f"or a common alias) nor \"drop\"")
            else:
                column = canonical(name)
                if column is None:
                    raise ValueError(f"label {name!r} maps to no DFEW column ({', '.join(DFEW_LABELS)}); "
                                     f"fold it with label_map.{name} = \"<column>\" or drop it with \"drop\"")
            m[i, DFEW_LABELS.index(column)] = 1.0
        if not m.any():
            raise ValueError("every label is dropped")
        return m


class FaceNet(Labelled):
    """A face-expression net: a crop of each detected face in, class scores out."""
    name: str = Field(min_length=1, max_length=64, description="the net's name in evidence and errors (distinct "
                                                                "per face net)")
    input_size: int = Field(ge=8, le=1024, description="square crop side in pixels")
    color: Literal["gray", "rgb", "bgr"] = Field(default="rgb", description="channels of the crop the net takes")
    layout: Literal["NCHW", "NHWC"] = Field(default="NCHW", description="channels first or last")
    dtype: Literal["float32", "uint8"] = Field(default="float32", description="the input tensor's type (uint8: "
                                                                               "pixels as they are)")
    scale: float = Field(default=1 / 255, gt=0, description="float32 input = (pixel * scale - mean) / std")
    mean: tuple[float, ...] = Field(default=(0.0,), description="subtracted after scaling: one value, or one per "
                                                                  "channel")
    std: tuple[float, ...] = Field(default=(1.0,), description="divided by after the mean: one value, or one per "
                                                                 "channel")
    crop_margin: float = Field(default=0.1, ge=0, le=1,
                               description="the box is widened by this share of its side on each side")

    @model_validator(mode="after")
    def _channels(self) -> FaceNet:
        if self.output == "valence_arousal":
            raise ValueError("output: a face net scores classes (logits or probabilities)")
        channels = 1 if self.color == "gray" else 3
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, channels):
                raise ValueError(f"{key} has {len(getattr(self, key))} values; {self.color} input has {channels}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3


class VoiceEmotionNet(Labelled):
    """A speech-emotion net: a mono waveform window around each segment in, class scores out, or
    (`output = "valence_arousal"`) two numbers, valence then arousal, in the declared ranges: those
    become a distribution over the seven labels by their places on the valence-arousal circumplex.

    The window is `window_s` of the participant's audio centred on the segment (a net needs more
    context than one segment holds). At a chunk's edges it shifts inward, so it never reaches into
    another chunk; it is shorter only when the chunk is. Segments whose own audio has no speech (the
    VAD's speech ratio below `voice.min_speech_ratio`) are not given to the net: silence gets no
    voice label, and a window shorter than `min_window_s` gets none either."""
    sample_rate: int = Field(default=16000, ge=8000, le=48000, description="the rate the net takes (audio is "
                                                                           "resampled linearly from 16 kHz)")
    window_s: float = Field(default=3.0, gt=0, le=30, description="seconds of audio around each segment the net "
                                                                  "hears (inside the chunk)")
    min_window_s: float = Field(default=0.5, gt=0, le=30, description="a shorter window gets no voice label")
    valence_range: tuple[float, float] = Field(default=(-1.0, 1.0), description="a valence_arousal net's valence "
                                                                                "at the unpleasant and pleasant ends")
    arousal_range: tuple[float, float] = Field(default=(0.0, 1.0), description="a valence_arousal net's arousal at "
                                                                               "the calm and excited ends")
    dominance_range: tuple[float, float] = Field(default=(0.0, 1.0), description="a valence_arousal net's dominance "
                                                                                 "at the submissive and dominant ends")
    # A valence_arousal net's output columns in its own order (audeering's wav2vec2 MSP-dim answers
    # arousal, dominance, valence): each is valence, arousal, dominance or "drop".
    dimensions: tuple[Literal["valence", "arousal", "dominance", "drop"], ...] = Field(
        default=("valence", "arousal"), description="a valence_arousal net's output columns in its order: valence, "
                                                    "arousal, dominance or drop")
    normalize: Literal["none", "zero_mean_unit_var"] = Field(default=
        "none", description="zero_mean_unit_var: as wav2vec2 / HuBERT feature extractors do")

    @model_validator(mode="after")
    def _window(self) -> VoiceEmotionNet:
        if self.min_window_s > self.window_s:
            raise ValueError("min_window_s is longer than window_s")
        if self.output == "valence_arousal" and (self.labels or self.label_map):
            raise ValueError("a valence_arousal net has no labels or label_map")
        if self.output != "valence_arousal" and self.dimensions != ("valence", "arousal"):
            raise ValueError('dimensions: only a net with output = "valence_arousal" has them')
        for dim in ("valence", "arousal"):
            if self.dimensions.count(dim) != 1:
                raise ValueError(f"dimensions {list(self.dimensions)}: name {dim} exactly once (the net's output "
                                 "columns in order: valence, arousal, dominance or drop)")
        if self.dimensions.count("dominance") > 1:
            raise ValueError(f"dimensions {list(self.dimensions)}: dominance at most once")
        for key in ("valence_range", "arousal_range", "dominance_range"):
            lo, hi = getattr(self, key)
            if not lo < hi:
                raise ValueError(f"{key} must be [low, high] with low < high")
        return self


BUILTIN_DETECTOR = "../face_detector/1"
RETIRED_DETECTOR_KEYS = ("tracking", "search_every")   # accepted, ignored
BLAZEFACE_FILE = "face_detection_{range}_range.onnx"   # in the detector folder, per range: built and loaded by it
BUILTIN_VAD = "../voice/1/silero_vad.jit"


class Detector(_Strict):
    """The face detector; an installed model uses the repository's own weights. Every sampled frame is
    searched; the tracking keys of older manifests (`tracking`, `search_every`) are accepted and ignored."""
    kind: Literal["blazeface", "mtcnn"] = Field(
        default="blazeface", description="BlazeFace (MediaPipe's, one pass per frame) or MTCNN (the cascade "
                                         "of earlier versions, several times the cost, kept for comparison)")
    range: Literal["short", "full"] = Field(
        default="short", description="BlazeFace's variant: short (faces within ~2 m: a webcam) or full (up to "
                                     "~5 m: a room camera); not used by MTCNN")
    folder: str = Field(default=BUILTIN_DETECTOR,
                        description="folder of the detector's files (face_detection_<range>_range.onnx; "
                                    "pnet.pt, rnet.pt, onet.pt), relative to the manifest")
    min_face_px: int = Field(default=40, ge=12, le=2000, description="smallest face side searched for, in "
                                                                     "pixels (BlazeFace scales each frame so that such "
                                                                     "a face is one it finds)")

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        """Manifests written before every frame was searched keep loading: their tracking keys have
        nothing left to set."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in RETIRED_DETECTOR_KEYS}
        return data

    def files(self) -> tuple[str, ...]:
        """The files this detector loads from its folder."""
        if self.kind == "mtcnn":
            return ("pnet.pt", "rnet.pt", "onet.pt")
        return (BLAZEFACE_FILE.format(range=self.range),)


class Voice(_Strict):
    """Speech detection (Silero VAD) and, optionally, a speech-emotion net."""
    vad: str = Field(default=BUILTIN_VAD, description="Silero VAD TorchScript file, relative to the manifest")
    speech_threshold: float = Field(default=0.5, gt=0, lt=1, description="VAD probability above which a frame "
                                                                         "of audio is speech")
    min_speech_ratio: float = Field(default=0.2, ge=0, le=1, description="share of a segment's audio that must be "
                                                                         "speech for it to count as speech")
    emotion: VoiceEmotionNet | None = Field(default=None, description="a speech-emotion net; without one the "
                                                                      "voice is prosodic arousal")


class Fusion(_Strict):
    """How face and voice combine into one distribution: a weighted product (log-linear pooling) of
    the modalities present. Without a voice-emotion net, voice is prosodic arousal: a prior over the
    labels' arousal, weighted by `arousal_weight` beside a face and mixed half with uniform alone."""
    face_weight: float = Field(default=1.0, gt=0, description="the face distribution's exponent in the product")
    voice_weight: float = Field(default=1.0, gt=0, description="the voice net's exponent in the product")
    arousal_weight: float = Field(default=0.3, ge=0, description="without a voice net: the arousal prior's exponent "
                                                                 "beside a face")
    voice_only_mix: float = Field(default=0.5, ge=0, le=1, description="without a voice net and without a face: "
                                                                       "the arousal prior's share against uniform")
    words_weight: float = Field(default=1.0, ge=0, description="where the `words` model ran: the exponent of the "
                                "words' valence prior, multiplied into the voice's evidence (0: words never move "
                                "a label)")


class Manifest(_Strict):
    """A model: its name and version, one to four face nets, the voice, the detector and the fusion."""
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
                      description="the model's name: rows carry `name/version` in model_version")
    # Optional only in a manifest given to `callstream models add`, which then assigns the next one.
    version: str | None = Field(default=None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
                                description="the version; `models add` assigns the next free one when left out")
    description: str = Field(default="", max_length=500, description="free text about the model, kept in the manifest")
    detector: Detector = Field(default_factory=Detector, description="the [detector] table")
    face: tuple[FaceNet, ...] = Field(min_length=1, max_length=4, description="one to four [[face]] tables")
    voice: Voice = Field(default_factory=Voice, description="the [voice] table")
    fusion: Fusion = Field(default_factory=Fusion, description="the [fusion] table")

    @model_validator(mode="after")
    def _names(self) -> Manifest:
        names = [f.name for f in self.face]
        if len(set(names)) != len(names):
            raise ValueError(f"face nets need distinct names: {names}")
        return self

    @property
    def model_version(self) -> str:
        """What every row this manifest produces carries in `model_version`."""
        if self.version is None:
            raise ManifestError(f"manifest {self.name!r} has no version (only `models add` assigns one)")
        return f"{self.name}/{self.version}"

    def fusion_params(self) -> FusionParams:
        """How this model fuses: its [fusion] table with its voice.min_speech_ratio."""
        f = self.fusion
        return FusionParams(face_weight=f.face_weight, voice_weight=f.voice_weight, arousal_weight=f.arousal_weight,
                            voice_only_mix=f.voice_only_mix, min_speech_ratio=self.voice.min_speech_ratio,
                            words_weight=f.words_weight)

    def files(self) -> dict[str, str]:
        """Every file the manifest names, by the key that names it."""
        out = {f"face[{i}].file": f.file for i, f in enumerate(self.face)}
        out["voice.vad"] = self.voice.vad
        if self.voice.emotion is not None:
            out["voice.emotion.file"] = self.voice.emotion.file
        for name in self.detector.files():
            out[f"detector.folder ({name})"] = f"{self.detector.folder}/{name}"
        return out


# Every table of a manifest, in the order a reader meets them: (its TOML header, its model).
TABLES: tuple[tuple[str, type[_Strict]], ...] = (
    ("(top level)", Manifest), ("[[face]]", FaceNet), ("[voice]", Voice), ("[voice.emotion]", VoiceEmotionNet),
    ("[detector]", Detector), ("[fusion]", Fusion))


def reference() -> str:
    """docs/MANIFEST.md: every key of every table, its type, default and meaning, from the models
    themselves, so the reference cannot drift from what is validated."""
    import json

    from pydantic_core import PydanticUndefined

    def shown(value: object) -> str:
        if isinstance(value, tuple):
            value = list(value)
        return "`" + json.dumps(value) + "`"

    from pipeline.model import words_manifest

    lines = ["# Model manifest reference", "",
             "Generated from `pipeline/model/manifest.py` and `pipeline/model/words_manifest.py` (`callstream "
             "models reference` prints it; a test fails when this file and the code disagree). How to write one: "
             "docs/MODEL_CARD.md, \"Bring your own model\".", ""]
    sections = [(f"manifest.toml {header}", model) for header, model in TABLES] + [
        (f"words.toml {header}", model) for header, model in words_manifest.TABLES]
    for header, model in sections:
        lines += [f"## {header}", "", " ".join((model.__doc__ or "").split()), "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, _Strict):
                continue   # a table of its own, below
            kind = _type_name(field.annotation)
            if field.default_factory is not None:
                default = shown(field.default_factory())   # type: ignore[call-arg]
            elif field.default is PydanticUndefined:
                default = "required"
            else:
                default = "none" if field.default is None else shown(field.default)
            bounds = ", ".join(f"{word} {getattr(m, attr)}" for m in field.metadata for attr, word in
                               (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="),
                                ("max_length", "length <=")) if getattr(m, attr, None) is not None)
            meaning = (field.description or "") + (f" ({bounds})" if bounds else "")
            lines.append(f"| `{key}` | `{kind}` | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def _type_name(annotation: object) -> str:
    from typing import get_args, get_origin

    if isinstance(annotation, type):
        return annotation.__name__
    if get_origin(annotation) is Literal:
        return " or ".join(f'"{a}"' for a in get_args(annotation))
    return str(annotation).replace("typing.", "").replace("pipeline.model.manifest.", "").replace(" | ", " or ")


def _problems(exc: ValidationError) -> list[str]:
    """One phrase per real problem: the validator's own words without pydantic's "Value error, "
    prefix, and without the errors a failed item causes in the table that holds it (a face net that
    fails leaves `face` "with at least 1 item" unmet)."""
    errors = exc.errors()
    locs = [tuple(e["loc"]) for e in errors]
    out = []
    for e, loc in zip(errors, locs, strict=True):
        if any(other != loc and other[:len(loc)] == loc for other in locs):
            continue   # a consequence of a problem inside it, which is reported
        msg = str(e["msg"]).removeprefix("Value error, ")
        out.append(f"{_where(loc)}: {msg}")
    return out


def _where(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"


def parse(text: str, source: str = MANIFEST) -> Manifest:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problems(exc))
        raise ManifestError(f"{source}: {problems}") from None


def load(path: Path) -> Manifest:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return parse(text, str(path))


def resolve(manifest_dir: Path, relative: str, repo: Path, key: str, source: str = MANIFEST) -> Path:
    """A manifest path as a file to open. Lexically confined to the model repository: a manifest is
    configuration, and configuration must not read files the server was never meant to serve."""
    if os.path.isabs(relative):
        raise ManifestError(f"{source}: {key}: {relative!r} must be relative to the manifest")
    target = os.path.normpath(os.path.join(os.path.abspath(manifest_dir), relative))
    root = os.path.normpath(os.path.abspath(repo))
    if os.path.commonpath([target, root]) != root:
        raise ManifestError(f"{source}: {key}: {relative!r} leaves the model repository {root}")
    return Path(target)
