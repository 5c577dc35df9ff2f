"""Loading the built TorchScript artifacts from a model version folder (triton_models/<model>/<version>/).

One place for the Triton models, `models eval`, the benchmark's in-process limit and the tests, so all
of them run exactly what Triton serves.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, cast

import torch

from pipeline.inference.face_detection import MTCNN

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


def detector(folder: Path, min_face: int = 40, device: str = "cpu") -> MTCNN:
    pnet, rnet, onet = (_channels_last(_load(folder, f"{n}.pt", device)) for n in ("pnet", "rnet", "onet"))
    return MTCNN(pnet, rnet, onet, min_face=min_face, device=device)


def expression(folder: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """Frozen: its batch norms fold into the convolutions before them, which makes the net 25-30 %
    cheaper on the CPU (outputs equal to 1e-7). Freezing the detector's nets gains nothing (no batch
    norm), and optimize_for_inference's oneDNN layouts made both slower at these sizes (measured)."""
    net = _channels_last(_load(folder, "mini_xception.pt", device))
    with warnings.catch_warnings():
        # TorchScript as a whole is deprecated in favour of torch.compile; the served artifacts are
        # TorchScript (Triton's own format for PyTorch models), so freezing them is what applies.
        warnings.simplefilter("ignore", DeprecationWarning)
        return cast(Any, torch.jit.freeze(net))


def vad(folder: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    return _load(folder, "silero_vad.jit", device)
