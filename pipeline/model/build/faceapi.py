"""A second real face-expression net: `@vladmandic/face-api`'s, converted by our code and installed
through the same manifest path a user's model takes.

The npm package (MIT) ships the net as TF.js weights (`model/face_expression_model*`): four densely
connected blocks of depthwise-separable convolutions over a 112x112 RGB face, a 7x7 average pool and
a fully connected layer to seven classes. We read the weights manifest and the binary shard ourselves
(uint8-quantised tensors dequantised as `q * scale + min`), rebuild the graph in PyTorch with
TensorFlow's 'same' padding, export it to ONNX, write its manifest and hand both to `models add`.
tests/model/test_faceapi.py checks the result against the TF.js original run by the package in Node.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np

PACKAGE = "@vladmandic/face-api"
VERSION = "1.7.15"
MODEL = "face_expression_model"
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")   # FACE_EXPRESSION_LABELS
MEAN_RGB = (122.782, 117.001, 104.298)   # FaceFeatureExtractor: (pixels - mean) / 255


class ConversionError(RuntimeError):
    """The package could not be fetched or does not hold the net as expected."""


def fetch(dest: Path) -> Path:
    """`npm pack` the pinned package into `dest` and unpack it; returns the package folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise ConversionError("npm is not installed: it fetches the package from the npm registry")
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(dest)],
                          capture_output=True, text=True, timeout=300)
    tarball = dest / f"vladmandic-face-api-{VERSION}.tgz"
    if done.returncode != 0 or not tarball.is_file():
        raise ConversionError(f"npm pack {PACKAGE}@{VERSION} failed: {done.stderr.strip()[-300:]}")
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/") and ".." not in m.name
                   and (m.isfile() or m.isdir())]
        tar.extractall(dest, members=members, filter="data")
    return dest / "package"


def read_weights(package: Path) -> tuple[dict[str, np.ndarray], str]:
    """The net's tensors by name, dequantised to float32, and the SHA-256 of the weights file."""
    manifest_path = package / "model" / f"{MODEL}-weights_manifest.json"
    try:
        groups = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{manifest_path}: {exc}") from None
    out: dict[str, np.ndarray] = {}
    digest = hashlib.sha256()
    for group in groups:
        data = b"".join((package / "model" / p).read_bytes() for p in group["paths"])
        digest.update(data)
        offset = 0
        for spec in group["weights"]:
            size = int(np.prod(spec["shape"]))
            q = spec.get("quantization")
            if q is None and spec["dtype"] == "float32":
                values = np.frombuffer(data, "<f4", size, offset)
                offset += 4 * size
            elif q is not None and q["dtype"] == "uint8":
                values = np.frombuffer(data, np.uint8, size, offset) * np.float32(q["scale"]) + np.float32(q["min"])
                offset += size
            else:
                raise ConversionError(f"{spec['name']}: unsupported dtype {spec['dtype']} / quantisation {q}")
            out[spec["name"]] = np.asarray(values, np.float32).reshape(spec["shape"])
        if offset != len(data):
            raise ConversionError(f"{manifest_path}: the manifest describes {offset} bytes, "
                                  f"the shard holds {len(data)}")
    return out, digest.hexdigest()


MANIFEST = """# @vladmandic/face-api's expression net ({package}@{version}, MIT; TF.js weights sha256 {sha}),
# converted by pipeline/model/build/faceapi.py. face-api crops faces with its own detector; here MTCNN's
# box is widened a little (crop_margin), a choice we have not tuned on labelled data.
name = "faceapi-expression"
version = "1"
description = "@vladmandic/face-api {version} expression net (112x112 RGB, depthwise-separable dense blocks)"

[[face]]
name = "faceapi-expression"
file = "faceapi_expression.onnx"
format = "onnx"
input_size = 112
color = "rgb"
layout = "NHWC"
dtype = "float32"
scale = {scale!r}
mean = [{mean}]
std = [1.0, 1.0, 1.0]
crop_margin = 0.05
output = "logits"
labels = [{labels}]
"""


def convert(package: Path, out: Path) -> Path:
    """The package's net as ONNX plus its manifest in `out`; returns the manifest's path."""
    import torch

    from pipeline.model.build.build import export_onnx
    from pipeline.model.build.faceapi_net import load

    weights, sha = read_weights(package)
    net = load(weights)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, torch.zeros(2, 112, 112, 3), out / "faceapi_expression.onnx")
    path = out / "manifest.toml"
    path.write_text(MANIFEST.format(package=PACKAGE, version=VERSION, sha=sha[:16], scale=1 / 255,
                                    mean=", ".join(repr(m / 255) for m in MEAN_RGB),
                                    labels=", ".join(f'"{label}"' for label in LABELS)))
    return path
