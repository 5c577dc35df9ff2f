"""A TensorFlow Lite graph rebuilt as a PyTorch module, op by op, from the file's own weights.

MediaPipe publishes BlazeFace only as `.tflite` with a batch of one. Reading the flatbuffer (the
`tflite` package: the schema, no TensorFlow) and replaying its operators in PyTorch gives the same net
with a free batch axis, exportable to ONNX like our other nets. The detectors are fully convolutional,
so the replay also takes other input sides (multiples of the coarsest stride, 16): reshapes keep the
batch and the last axis and upsamplings keep their factor, and the cells, hence the anchors, follow
the input's size; at the file's own size it is the file's graph. Only the operators the face detectors
use are supported; anything else is refused by name, so a different file cannot convert silently
wrong. Tensors are kept NCHW inside; the graph's NHWC axes are translated where an op names one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAME, VALID = 0, 1                   # tflite Padding
NO_ACTIVATION, RELU, RELU6 = 0, 1, 3  # tflite ActivationFunctionType


class UnsupportedGraph(ValueError):
    """The file uses an operator or option this converter does not replay."""


@dataclass
class Op:
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME: the output is ceil(size / stride) and the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pads(padding: int, nhwc: list[int], kernel: Any, stride: tuple[int, int],
          dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) for an op's padding, from the graph's static shapes."""
    if padding == VALID:
        return (0, 0, 0, 0)
    if padding != SAME:
        raise UnsupportedGraph(f"padding {padding}")
    top, bottom = _same_pads(nhwc[1], kernel[0], stride[0], dilation[0])
    left, right = _same_pads(nhwc[2], kernel[1], stride[1], dilation[1])
    return (left, right, top, bottom)


def _activate(x: torch.Tensor, code: int) -> torch.Tensor:
    if code == NO_ACTIVATION:
        return x
    if code == RELU:
        return F.relu(x)
    if code == RELU6:
        return F.relu6(x)
    raise UnsupportedGraph(f"fused activation {code}")


class TFLiteGraph(nn.Module):
    """Runs the recorded ops in order, their options resolved when the file was read. Constants become
    buffers (float32)."""

    def __init__(self, ops: list[Op], constants: dict[int, np.ndarray], inputs: list[int],
                 outputs: list[int]) -> None:
        super().__init__()
        self.ops, self.input_ids, self.output_ids = ops, inputs, outputs
        self._names: dict[int, str] = {}
        for tid, value in constants.items():
            name = f"t{tid}"
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value)), persistent=True)
            self._names[tid] = name

    def const(self, tid: int) -> torch.Tensor:
        return getattr(self, self._names[tid])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`image`: (N, H, W, C) as the original takes it; the outputs in the original's order and shapes."""
        values: dict[int, torch.Tensor] = {self.input_ids[0]: image.permute(0, 3, 1, 2)}
        for op in self.ops:
            values[op.outputs[0]] = self._run(op, values)
        return tuple(values[t] for t in self.output_ids)

    def _run(self, op: Op, v: dict[int, torch.Tensor]) -> torch.Tensor:
        o = op.options
        x = v[op.inputs[0]] if op.inputs[0] in v else self.const(op.inputs[0])
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight, bias = self.const(op.inputs[1]), self.const(op.inputs[2])
            if op.kind == "CONV_2D":
                w = weight.permute(0, 3, 1, 2)   # (out, kh, kw, in) -> (out, in, kh, kw)
            else:
                w = weight.permute(3, 0, 1, 2)   # (1, kh, kw, out) -> (out, 1, kh, kw)
            if any(o["pads"]):
                x = F.pad(x, o["pads"])
            y = F.conv2d(x, w, bias, stride=o["stride"], dilation=o["dilation"], groups=o["groups"])
            return _activate(y, o["activation"])
        if op.kind == "ADD":
            b = v[op.inputs[1]] if op.inputs[1] in v else self.const(op.inputs[1])
            return _activate(x + b, o["activation"])
        if op.kind == "RELU":
            return F.relu(x)
        if op.kind == "MAX_POOL_2D":
            if any(o["pads"]):
                x = F.pad(x, o["pads"], value=float("-inf"))
            return _activate(F.max_pool2d(x, o["filter"], o["stride"]), o["activation"])
        if op.kind == "PAD":
            return F.pad(x, o["pads"])
        if op.kind == "RESIZE_BILINEAR":
            return F.interpolate(x, scale_factor=o["factor"], mode="bilinear", align_corners=False)
        if op.kind == "RESHAPE":
            if x.dim() == 4:
                x = x.permute(0, 2, 3, 1)   # back to the graph's NHWC element order
            # (N, cells x anchors, values): the cells follow the input's size.
            return x.reshape(x.shape[0], -1, o["shape"][-1])
        if op.kind == "CONCATENATION":
            return _activate(torch.cat([v[t] for t in op.inputs], dim=o["dim"]), o["activation"])
        raise UnsupportedGraph(op.kind)


def read(path: Path) -> TFLiteGraph:
    """The first subgraph of a .tflite file as a TFLiteGraph; float16 weights (DEQUANTIZE) as float32."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    opnames = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise UnsupportedGraph(f"{path}: {model.SubgraphsLength()} subgraphs")
    g = model.Subgraphs(0)
    dtypes = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
              tflite.TensorType.INT32: np.int32}

    def tensor_data(tid: int) -> np.ndarray | None:
        t = g.Tensors(tid)
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data is None or len(data) == 0:
            return None
        if t.Type() not in dtypes:
            raise UnsupportedGraph(f"{path}: tensor {t.Name()!r} of type {t.Type()}")
        return np.frombuffer(data.tobytes(), dtypes[t.Type()]).reshape(t.ShapeAsNumpy())

    shapes = {i: g.Tensors(i).ShapeAsNumpy().tolist() for i in range(g.TensorsLength())}
    constants: dict[int, np.ndarray] = {}
    ops: list[Op] = []

    def options(op: Any, cls: Any) -> Any:
        table, opts = op.BuiltinOptions(), cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = opnames.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins, outs = [int(t) for t in op.InputsAsNumpy()], [int(t) for t in op.OutputsAsNumpy()]
        if kind == "DEQUANTIZE":
            data = tensor_data(ins[0])
            if data is None:
                raise UnsupportedGraph(f"{path}: DEQUANTIZE of a computed tensor")
            constants[outs[0]] = data.astype(np.float32)
            continue
        for t in ins:
            if t >= 0 and t not in constants and (data := tensor_data(t)) is not None and data.dtype != np.int32:
                constants[t] = data.astype(np.float32)
        o: dict[str, Any] = {}
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opts = options(op, tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions)
            if kind == "DEPTHWISE_CONV_2D" and opts.DepthMultiplier() not in (0, 1):
                raise UnsupportedGraph(f"{path}: depth multiplier {opts.DepthMultiplier()}")
            kernel = shapes[ins[1]]   # (out, kh, kw, in) or (1, kh, kw, out)
            stride = (opts.StrideH(), opts.StrideW())
            dilation = (opts.DilationHFactor() or 1, opts.DilationWFactor() or 1)
            o = {"stride": stride, "dilation": dilation, "activation": opts.FusedActivationFunction(),
                 "pads": _pads(opts.Padding(), shapes[ins[0]], kernel[1:3], stride, dilation),
                 "groups": 1 if kind == "CONV_2D" else kernel[3]}
        elif kind == "ADD":
            o = {"activation": options(op, tflite.AddOptions).FusedActivationFunction()}
        elif kind == "MAX_POOL_2D":
            opts = options(op, tflite.Pool2DOptions)
            stride, window = (opts.StrideH(), opts.StrideW()), (opts.FilterHeight(), opts.FilterWidth())
            o = {"stride": stride, "filter": window, "activation": opts.FusedActivationFunction(),
                 "pads": _pads(opts.Padding(), shapes[ins[0]], window, stride, (1, 1))}
        elif kind == "PAD":
            pads = tensor_data(ins[1])
            if pads is None:
                raise UnsupportedGraph(f"{path}: PAD with computed paddings")
            before_after = pads.tolist()   # NHWC (before, after) per axis
            if before_after[0] != [0, 0]:
                raise UnsupportedGraph(f"{path}: PAD of the batch axis")
            # F.pad takes the last axis first: W, H, C of the NCHW tensors kept inside.
            o = {"pads": (*before_after[2], *before_after[1], *before_after[3])}
            ins = ins[:1]
        elif kind == "RESIZE_BILINEAR":
            opts = options(op, tflite.ResizeBilinearOptions)
            size = tensor_data(ins[1])
            if size is None:
                raise UnsupportedGraph(f"{path}: RESIZE_BILINEAR to a computed size")
            h, w = shapes[ins[0]][1:3]
            if int(size[0]) % h or int(size[1]) % w or int(size[0]) // h != int(size[1]) // w:
                raise UnsupportedGraph(f"{path}: RESIZE_BILINEAR by other than one whole factor")
            if opts.AlignCorners() or not opts.HalfPixelCenters():
                raise UnsupportedGraph(f"{path}: RESIZE_BILINEAR without half-pixel centres")
            o = {"factor": float(int(size[0]) // h)}
            ins = ins[:1]
        elif kind == "RESHAPE":
            if len(shapes[outs[0]]) != 3:
                raise UnsupportedGraph(f"{path}: RESHAPE to {shapes[outs[0]]}")
            o = {"shape": shapes[outs[0]]}
            ins = ins[:1]
        elif kind == "CONCATENATION":
            opts = options(op, tflite.ConcatenationOptions)
            rank = len(shapes[outs[0]])
            axis = opts.Axis() % rank
            # The graph's NHWC axis as the dimension of the NCHW tensors kept inside (after a reshape, as is).
            o = {"dim": (0, 2, 3, 1)[axis] if rank == 4 else axis, "activation": opts.FusedActivationFunction()}
        elif kind != "RELU":
            raise UnsupportedGraph(f"{path}: operator {kind}")
        ops.append(Op(kind, ins, outs, o))
    return TFLiteGraph(ops, constants, [int(t) for t in g.InputsAsNumpy()],
                       [int(t) for t in g.OutputsAsNumpy()]).eval()
