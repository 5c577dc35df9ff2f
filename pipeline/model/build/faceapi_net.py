"""face-api's expression net in PyTorch, loaded from its TF.js tensors (pipeline/model/build/faceapi.py)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.build.faceapi import LABELS, ConversionError

BLOCKS = ((3, 32), (32, 64), (64, 128), (128, 256))


def _same(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TensorFlow's 'same' padding for a 3x3 kernel on an even-sized input: 1 on every side at stride
    1; at stride 2 one row and column more at the end, none at the start."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


class SeparableConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(_same(x, self.stride)))


class DenseBlock(nn.Module):
    """face-api's denseBlock4: each convolution sees the ReLU of the sum of all before it."""

    def __init__(self, c_in: int, c_out: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.conv0: nn.Module = nn.Conv2d(c_in, c_out, 3, 2) if first else SeparableConv(c_in, c_out, 2)
        self.conv1, self.conv2, self.conv3 = (SeparableConv(c_out, c_out, 1) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.conv0(_same(x, 2)) if self.first else self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + out2 + out3))
        return F.relu(out1 + out2 + out3 + out4)


class FaceApiExpression(nn.Module):
    """(N, 112, 112, 3) normalised RGB in (channels last, as TF.js), seven logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(a, b, k == 0) for k, (a, b) in enumerate(BLOCKS)))
        self.fc = nn.Linear(256, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(x.permute(0, 3, 1, 2))
        out = F.avg_pool2d(out, 7, 2)
        return self.fc(out.flatten(1))


def load(weights: dict[str, np.ndarray]) -> FaceApiExpression:
    """The TF.js tensors in our module: filters from HWIO (and HW-I-1 depthwise) to PyTorch's OIHW."""
    net = FaceApiExpression().eval()
    taken: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in weights:
            raise ConversionError(f"the weights manifest has no {name}")
        taken.add(name)
        return weights[name]

    state = {}
    for k, block in enumerate(net.blocks):
        for i in range(4):
            name, key = f"dense{k}/conv{i}", f"blocks.{k}.conv{i}"
            if i == 0 and block.first:
                state[f"{key}.weight"] = take(f"{name}/filters").transpose(3, 2, 0, 1)
                state[f"{key}.bias"] = take(f"{name}/bias")
                continue
            state[f"{key}.depthwise.weight"] = take(f"{name}/depthwise_filter").transpose(2, 3, 0, 1)
            state[f"{key}.pointwise.weight"] = take(f"{name}/pointwise_filter").transpose(3, 2, 0, 1)
            state[f"{key}.pointwise.bias"] = take(f"{name}/bias")
    state["fc.weight"] = take("fc/weights").T
    state["fc.bias"] = take("fc/bias")
    if set(weights) != taken:
        raise ConversionError(f"tensors this conversion does not place: {sorted(set(weights) - taken)}")
    net.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}, strict=True)
    return net
