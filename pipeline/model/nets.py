"""Running a manifest's nets: ONNX Runtime or TorchScript underneath, DFEW probabilities on top.

Each net is fed exactly as its manifest entry says (crop size, colour, layout, dtype, scaling; sample
rate, window, normalisation) and read the same way (logits or probabilities, its own label order
mapped onto the seven columns). A net's answer is checked before anything uses it: a wrong shape or a
value that is not finite fails the request that caused it with a NetOutputError, never a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.model import manifest as mf
from pipeline.model.crops import CropSpec
from pipeline.shared.labels import DFEW_AROUSAL, DFEW_LABELS, DFEW_VALENCE
from pipeline.shared.wire import SAMPLE_RATE


class NetOutputError(ValueError):
    """A net answered with the wrong shape or with values that are not finite numbers."""


class NetInputError(ValueError):
    """A net's runtime refused a request's inputs (ONNX Runtime's shape and value checks, a TorchScript
    error). The same inputs fail the same way again: the request fails for good, it is not retried."""


class NoSuchOutput(ValueError):
    """The manifest's output_name is not one of the net's outputs."""


class Runner(Protocol):
    input_shape: tuple[int | None, ...]   # None where the net accepts any size (a dynamic axis)
    input_dtype: str                      # "float32" or "uint8"
    max_batch: int | None                 # the batch the net's input fixes (often 1 in public exports)

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def _in_slices(run: Any, x: np.ndarray, max_batch: int | None, name: str, runtime: str) -> np.ndarray:
    """Run `x` through `run` at most `max_batch` items at a time, so a net exported with a fixed batch
    answers the batches the worker stacks; a refusal names the net, the input shape and the reason."""
    step = max_batch if max_batch else max(1, len(x))
    outs = []
    for i in range(0, max(1, len(x)), step):
        part = x[i:i + step] if max_batch else x
        try:
            outs.append(np.asarray(run(part)))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            raise NetInputError(f"{name}: {runtime} refused input {list(part.shape)}: {first}") from None
    return outs[0] if len(outs) == 1 else np.concatenate(outs)


def providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for this instance, best first, limited to those installed:
    TensorRT, then CUDA on a GPU instance (the official Triton image's onnxruntime-gpu has both),
    always ending with the CPU."""
    import onnxruntime as ort

    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device.startswith("cuda") else []
    available = set(ort.get_available_providers())
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def session_options() -> Any:
    """One thread per session, as for torch: the model instance count sets the parallelism."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


class OnnxRunner:
    def __init__(self, path: Path, device: str = "cpu", output_name: str | None = None) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), session_options(), providers=providers(device))
        except Exception as exc:  # onnxruntime raises its own types for every kind of bad file
            raise ValueError(f"{path.name} is not an ONNX model ONNX Runtime can run: {str(exc)[:300]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"{path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                             "a net here takes one input and answers at least one output")
        names = [o.name for o in outputs]
        if output_name is not None and output_name not in names:
            raise NoSuchOutput(f"{path.name} has no output {output_name!r}; its outputs are {names}")
        self.name = path.name
        self.input_name, self.output_name = inputs[0].name, output_name or names[0]
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape)
        self.max_batch = self.input_shape[0] if self.input_shape else None
        kinds = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}
        if inputs[0].type not in kinds:
            raise ValueError(f"{path.name} takes {inputs[0].type}; float32 and uint8 inputs are supported")
        self.input_dtype = kinds[inputs[0].type]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _in_slices(lambda part: self.session.run([self.output_name], {self.input_name: part})[0], x,
                          self.max_batch, self.name, "ONNX Runtime")


class TorchScriptRunner:
    input_shape: tuple[int | None, ...] = ()   # TorchScript does not declare it: the trial run tells
    input_dtype = "float32"
    max_batch: int | None = None               # nor this: the trial runs the batches the worker sends

    def __init__(self, path: Path, device: str = "cpu", dtype: str = "float32") -> None:
        import torch

        try:
            self.net = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:  # torch raises RuntimeError, ValueError or its own for a bad file
            raise ValueError(f"{path.name} is not a TorchScript model: {str(exc).splitlines()[0][:300]}") from None
        self.device, self.input_dtype, self.name = device, dtype, path.name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        def run(part: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = self.net(torch.from_numpy(np.ascontiguousarray(part)).to(self.device))
            if isinstance(out, tuple | list):
                out = out[0]
            return out.float().cpu().numpy()

        return _in_slices(run, x, None, self.name, "TorchScript")


def runner(path: Path, fmt: str, device: str = "cpu", dtype: str = "float32", output_name: str | None = None
           ) -> Runner:
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    return OnnxRunner(path, device, output_name) if fmt == "onnx" else TorchScriptRunner(path, device, dtype)


CIRCUMPLEX_WIDTH = 0.25   # s.d. of the Gaussian around each label's (valence, arousal), both scaled to 0..1


def circumplex(valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """(N, 7) DFEW probabilities from valence and arousal, both scaled to 0..1: a Gaussian around each
    label's place on the circumplex (labels.DFEW_VALENCE, DFEW_AROUSAL), as the arousal prior does."""
    v = (np.asarray(DFEW_VALENCE) + 1) / 2
    a = np.asarray(DFEW_AROUSAL)
    d2 = (valence[:, None] - v[None]) ** 2 + (arousal[:, None] - a[None]) ** 2
    p = np.exp(-0.5 * d2 / CIRCUMPLEX_WIDTH ** 2)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def scaled_dimensions(scores: np.ndarray, spec: mf.VoiceEmotionNet) -> np.ndarray:
    """(N, 3) valence in -1..1, arousal and dominance in 0..1 (NaN where the net has no dominance) from a
    valence_arousal net's columns, each mapped from its declared range and clipped to it: the scale the
    stored rows use whatever the net's own."""
    dims = spec.dimensions
    out = np.full((len(scores), 3), np.nan)
    for k, (name, (lo, hi)) in enumerate((("valence", spec.valence_range), ("arousal", spec.arousal_range),
                                          ("dominance", spec.dominance_range))):
        if name in dims:
            out[:, k] = np.clip((scores[:, dims.index(name)] - lo) / (hi - lo), 0, 1)
    out[:, 0] = out[:, 0] * 2 - 1
    return out


def to_dfew(scores: np.ndarray, spec: mf.Labelled, mapping: np.ndarray, what: str) -> np.ndarray:
    """A net's (N, classes) output as (N, 7) DFEW probabilities; dropped classes renormalised away.
    A valence-arousal net's (N, 2) output is placed on the circumplex instead."""
    scores = np.asarray(scores)
    if isinstance(spec, mf.VoiceEmotionNet) and spec.output == "valence_arousal":
        dims = spec.dimensions
        if scores.ndim != 2 or scores.shape[1] != len(dims):
            raise NetOutputError(f"{what} returned shape {tuple(scores.shape)}; its manifest declares (batch, "
                                 f"{len(dims)}): {', '.join(dims)}")
        s = scores.astype(np.float64)
        if not np.isfinite(s).all():
            raise NetOutputError(f"{what} returned values that are not finite (NaN or infinity)")
        d = scaled_dimensions(s, spec)
        return circumplex((d[:, 0] + 1) / 2, d[:, 1])
    if scores.ndim != 2 or scores.shape[1] != len(spec.labels):
        raise NetOutputError(f"{what} returned shape {tuple(scores.shape)}; the manifest declares "
                             f"(batch, {len(spec.labels)}) for labels {list(spec.labels)}")
    s = scores.astype(np.float64)
    if not np.isfinite(s).all():
        raise NetOutputError(f"{what} returned values that are not finite (NaN or infinity)")
    if spec.output == "logits":
        e = np.exp(s - s.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    else:
        if (s < -1e-6).any():
            raise NetOutputError(f"{what} declares probabilities but returned negative values")
        p = np.clip(s, 0, None)
    out = p @ mapping
    total = out.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise NetOutputError(f"{what} put all probability on dropped classes")
    return (out / total).astype(np.float32)


@dataclass
class FaceExpression:
    """One face-expression net with its manifest entry."""
    spec: mf.FaceNet
    run: Runner
    mapping: np.ndarray

    @classmethod
    def load(cls, spec: mf.FaceNet, path: Path, device: str = "cpu") -> FaceExpression:
        return cls(spec, runner(path, spec.format, device, spec.dtype, spec.output_name), spec.mapping())

    @property
    def crop(self) -> CropSpec:
        return CropSpec(self.spec.input_size, self.spec.crop_margin, self.spec.color)

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, S, S) gray or (N, S, S, 3) RGB/BGR as this net's input tensor."""
        s = self.spec
        x = crops[..., None] if crops.ndim == 3 else crops
        if s.dtype == "float32":
            x = (x.astype(np.float32) * np.float32(s.scale) - np.asarray(s.mean, np.float32)) \
                / np.asarray(s.std, np.float32)
        else:
            x = x.astype(np.uint8)
        if s.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def probs(self, crops: np.ndarray) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, len(DFEW_LABELS)), np.float32)
        return to_dfew(self.run(self.prepare(crops)), self.spec, self.mapping, f"face net {self.spec.name!r}")


@dataclass
class VoiceEmotion:
    """The speech-emotion net with its manifest entry: a window of 16 kHz audio in, DFEW out."""
    spec: mf.VoiceEmotionNet
    run: Runner
    mapping: np.ndarray

    @classmethod
    def load(cls, spec: mf.VoiceEmotionNet, path: Path, device: str = "cpu") -> VoiceEmotion:
        mapping = spec.mapping() if spec.output != "valence_arousal" else np.zeros((2, len(DFEW_LABELS)), np.float32)
        return cls(spec, runner(path, spec.format, device, output_name=spec.output_name), mapping)

    @property
    def window_ms(self) -> int:
        return int(round(self.spec.window_s * 1000))

    def prepare(self, audio: np.ndarray) -> np.ndarray:
        """One window at the pipeline's 16 kHz as the net's (T,) input: resampled linearly to its rate,
        normalised if it asks, padded or cut at the end where its input length is fixed."""
        x = np.asarray(audio, np.float32)
        rate = self.spec.sample_rate
        if rate != SAMPLE_RATE and len(x):
            n = int(round(len(x) * rate / SAMPLE_RATE))
            x = np.interp(np.arange(n) * (SAMPLE_RATE / rate), np.arange(len(x)), x).astype(np.float32)
        if self.spec.normalize == "zero_mean_unit_var":
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        fixed = self.run.input_shape[-1] if self.run.input_shape else None
        if fixed:
            x = np.pad(x, (0, max(0, fixed - len(x))))[:fixed]
        return x.astype(np.float32)

    @property
    def dimensional(self) -> bool:
        return self.spec.output == "valence_arousal"

    def probs(self, windows: list[np.ndarray]) -> np.ndarray:
        return self.answer(windows)[0]

    def answer(self, windows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """DFEW probabilities per window, and a dimensional net's own valence, arousal and dominance
        (scaled_dimensions; NaN for a classifier). Windows of equal length run as one batch; a window's
        result never depends on what else is in the batch (no padding inside a batch)."""
        out = np.zeros((len(windows), len(DFEW_LABELS)), np.float32)
        dims = np.full((len(windows), 3), np.nan, np.float32)
        prepared = [self.prepare(w) for w in windows]
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(prepared):
            by_length.setdefault(len(x), []).append(i)
        for idx in by_length.values():
            scores = self.run(np.stack([prepared[i] for i in idx]))
            out[idx] = to_dfew(scores, self.spec, self.mapping, "voice emotion net")
            if self.dimensional:
                dims[idx] = scaled_dimensions(np.asarray(scores, np.float64), self.spec)
        return out, dims


def trial_inputs(net: FaceExpression, n: int = 3, seed: int = 0) -> np.ndarray:
    """Generated crops for a trial run: noise, so a net that only works on one constant fails here."""
    rng = np.random.default_rng(seed)
    shape = (n, net.spec.input_size, net.spec.input_size) + (() if net.spec.color == "gray" else (3,))
    return rng.integers(0, 256, shape, dtype=np.uint8)


def describe(run: Runner) -> dict[str, Any]:
    return {"input_shape": list(run.input_shape), "input_dtype": run.input_dtype, "max_batch": run.max_batch}
