"""`callstream bench --nets`: each built-in net on TorchScript, on ONNX Runtime and on ONNX Runtime
with int8 weights and activations, one thread, same inputs: milliseconds per call and the largest
output difference. It decides which runtime serves which net (docs/BENCHMARKS.md): ONNX Runtime where
it is faster at outputs equal to 1e-5; int8 only where it is faster still and the labels hold.

The int8 nets are quantised statically (QDQ, per-channel weights), calibrated on the same inputs they
are timed on: the timing does not depend on what the calibration saw, the outputs do, so the int8
difference column says only that the quantised net runs, not how good its labels are."""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.model import artifacts
from pipeline.model.blazeface import VARIANTS, Fit
from pipeline.model.build import tflite_graph
from pipeline.model.build.build import Joined, export_onnx
from pipeline.model.build.mini_xception import load_fer_hdf5
from pipeline.model.build.sources import BLAZEFACE, FER_MINI_XCEPTION, SILERO_VAD
from pipeline.model.mtcnn import MTCNN
from pipeline.model.nets import session_options

REPEAT = 30


def _ms(fn: Callable[[], Any]) -> float:
    with torch.inference_mode():
        fn()
        start = time.perf_counter()
        for _ in range(REPEAT):
            fn()
    return (time.perf_counter() - start) / REPEAT * 1000


def _session(path: Path) -> Any:
    """A CPU session as the served nets get (the VAD's file has three inputs, so not an OnnxRunner)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def _int8(path: Path, inputs: list[np.ndarray]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feed = iter([{"input": x} for x in inputs])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feed, None)

    target = path.with_suffix(".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # the quantiser's advice to pre-process, once per net, on the root logger
    try:
        quantize_static(str(path), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return target


def _pair(name: str, net: Any, shapes: list[tuple[int, ...]], folder: Path,
          dynamic: tuple[int, ...] = (0,), dynamic_out: tuple[int, ...] = (0,)) -> list[dict[str, Any]]:
    """A TorchScript (channels-last, as served) net against its own ONNX export, plain and int8."""
    inputs = [torch.rand(*shape) for shape in shapes]
    exported = export_onnx(net, inputs[0], folder / f"{name}.onnx", dynamic=dynamic, dynamic_out=dynamic_out)
    session = _session(exported)
    quantized = _session(_int8(exported, [x.numpy() for x in inputs]))
    rows = []
    for shape, x in zip(shapes, inputs, strict=True):
        cl = x.contiguous(memory_format=torch.channels_last)

        def ts(cl: torch.Tensor = cl) -> Any:
            return net(cl)

        def ort(x: torch.Tensor = x) -> Any:
            return session.run(None, {"input": x.numpy()})

        def int8(x: torch.Tensor = x) -> Any:
            return quantized.run(None, {"input": x.numpy()})

        with torch.inference_mode():
            ref = ts()
        ref = ref if isinstance(ref, tuple | list) else (ref,)
        diff = max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref, ort(), strict=True))
        diff8 = max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref, int8(), strict=True))
        rows.append({"net": name, "input": "x".join(map(str, shape)), "diff": diff, "torchscript_ms": _ms(ts),
                     "onnxruntime_ms": _ms(ort), "int8_ms": _ms(int8), "int8_diff": diff8})
    return rows


def _vad(folder: Path) -> dict[str, Any]:
    """Silero's TorchScript against the ONNX file its package ships (not an export of ours)."""
    vad = artifacts.vad_file(SILERO_VAD.path())
    session = _session(SILERO_VAD.path().with_name("silero_vad.onnx"))
    x = torch.rand(20, 16 * 512) * 0.2 - 0.1

    def ts() -> np.ndarray:
        vad.reset_states()
        return torch.stack([vad(x[:, i * 512:(i + 1) * 512], 16000).reshape(-1) for i in range(16)], 1).numpy()

    def onnx() -> np.ndarray:
        state, out = np.zeros((2, 20, 128), np.float32), []
        for i in range(16):
            o, state = session.run(None, {"input": x[:, i * 512:(i + 1) * 512].numpy(), "state": state,
                                          "sr": np.array(16000, np.int64)})
            out.append(o.reshape(-1))
        return np.stack(out, 1)

    with torch.inference_mode():
        diff = float(np.abs(ts() - onnx()).max())
    return {"net": "silero-vad", "input": "20 items x 16 windows", "diff": diff, "torchscript_ms": _ms(ts),
            "onnxruntime_ms": _ms(onnx)}


def compare(repo: Path) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    torch.manual_seed(0)   # the same inputs every run: the differences repeat, the timings vary
    detector = artifacts.detector(artifacts.version_dir(repo, "face_detector"), kind="mtcnn")
    assert isinstance(detector, MTCNN)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(tmp)
        expression = torch.jit.freeze(torch.jit.trace(load_fer_hdf5(FER_MINI_XCEPTION.path()).eval(),
                                                      torch.rand(2, 1, 64, 64)).to(memory_format=torch.channels_last))
        rows = _pair("mini-xception", expression, [(1, 1, 64, 64), (10, 1, 64, 64), (40, 1, 64, 64)], folder)
        rows += _pair("mtcnn-pnet", detector.pnet, [(1, 3, 243, 432), (1, 3, 122, 216), (4, 3, 61, 108)], folder,
                      dynamic=(0, 2, 3))
        rows += _pair("mtcnn-rnet", detector.rnet, [(16, 3, 24, 24), (64, 3, 24, 24)], folder)
        rows += _pair("mtcnn-onet", detector.onet, [(2, 3, 48, 48), (16, 3, 48, 48)], folder)
        for name, source in BLAZEFACE.items():
            side = VARIANTS[name].size
            blaze = torch.jit.freeze(torch.jit.trace(Joined(tflite_graph.read(source.path())).eval(),
                                                     torch.rand(2, side, side, 3)))
            # As served: a 270x240 view at 40-px faces, 16 and 32 frames a request.
            fit = Fit.passes(270, 240, VARIANTS[name], 40)[0]
            rows += _pair(f"blazeface-{name}", blaze, [(1, side, side, 3), (16, fit.height, fit.width, 3),
                                                       (32, fit.height, fit.width, 3)],
                          folder, dynamic=(0, 1, 2), dynamic_out=(0, 1))
        rows.append(_vad(folder))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| net | input | TorchScript ms | ONNX Runtime ms | max difference | ORT int8 ms | int8 difference |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        int8 = f"{r['int8_ms']:.1f} | {r['int8_diff']:.1e} |" if "int8_ms" in r else "- | - |"
        lines.append(f"| {r['net']} | {r['input']} | {r['torchscript_ms']:.1f} | {r['onnxruntime_ms']:.1f} | "
                     f"{r['diff']:.1e} | {int8}")
    return "\n".join(lines)
