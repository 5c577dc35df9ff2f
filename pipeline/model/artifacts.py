"""Loading the built face detector and VAD from a model version folder (triton_models/<model>/<version>/).

One place for the Triton models, `models eval`, the benchmark's in-process limit and the tests, so all
of them run exactly what Triton serves. Expression and voice-emotion nets are the manifest's
(pipeline/model/nets.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from pipeline.model.blazeface import VARIANTS, BlazeFace
from pipeline.model.crops import DEFAULT_CROP, CropSpec
from pipeline.model.mtcnn import MTCNN
from pipeline.model.nets import OnnxRunner

VERSION = "1"


def version_dir(repo: Path, model: str) -> Path:
    return Path(repo) / model / VERSION


def _load(folder: Path, name: str, device: str) -> torch.jit.ScriptModule:
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `callstream models build` first")
    return torch.jit.load(str(path), map_location=device).eval()


def _channels_last(net: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Conv weights in channels-last layout, so every activation after the first convolution is too:
    PyTorch's CPU pooling and small convolutions are several times faster on it (measured, one thread:
    mini-Xception 22 -> 12 ms for 10 faces, O-Net 10.3 -> 3.3 ms for 9 crops; outputs equal to 1e-6)."""
    return cast(Any, net).to(memory_format=torch.channels_last)  # runtime API the stubs leave out


def detector(folder: Path, min_face: int = 40, device: str = "cpu", crop: CropSpec = DEFAULT_CROP,
             kind: str = "blazeface", variant: str = "short") -> BlazeFace | MTCNN:
    """The manifest's [detector]: BlazeFace of the given range, or MTCNN's three nets."""
    if kind == "blazeface":
        v = VARIANTS[variant]
        path = Path(folder) / v.file
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `callstream models build` first")
        return BlazeFace(OnnxRunner(path, device), v, min_face=min_face, crop=crop)
    pnet, rnet, onet = (_channels_last(_load(folder, f"{n}.pt", device)) for n in ("pnet", "rnet", "onet"))
    return MTCNN(pnet, rnet, onet, min_face=min_face, device=device, crop=crop)


def vad(folder: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    return vad_file(Path(folder) / "silero_vad.jit", device)


def vad_file(path: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    return _load(path.parent, path.name, device)
