"""Async Triton client for the `emotion` model: one gRPC call per batch of (participant, segment) items."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from pipeline.errors import BadChunk, TransientFault
from pipeline.shared.fusion import MIN_SPEECH_RATIO, Evidence, FusionParams
from pipeline.shared.wire import SAMPLE_RATE

# tritonclient's own channel options, plus a reconnect backoff capped at a second: gRPC's default grows
# to two minutes, so a Triton that restarted would stay unreachable to this channel long after it is
# ready (the worker's retry probes ask every half second and must see it within one or two).
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 2**31 - 1), ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", False), ("grpc.http2.max_pings_without_data", 2),
    ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

EMPTY_FRAME = (16, 16)  # stands in for "no video" so audio-only items still have a valid tensor


@dataclass
class Item:
    frames: np.ndarray   # (F, H, W, 3) uint8; F may be 0
    audio: np.ndarray    # float32 mono 16 kHz; may be empty
    voice: np.ndarray | None = None  # the audio context around the piece for a voice-emotion net, if wanted


def _frame_key(item: Item) -> tuple[int, int]:
    if not len(item.frames):
        return EMPTY_FRAME
    return int(item.frames.shape[1]), int(item.frames.shape[2])


def pack(items: list[Item]) -> dict[str, np.ndarray]:
    """Pad a same-frame-size group into the model's tensors (pure; unit-tested)."""
    h, w = _frame_key(items[0])
    n_frames = max(1, max(len(i.frames) for i in items))
    n_audio = max(1, max(len(i.audio) for i in items))
    frames = np.zeros((len(items), n_frames, h, w, 3), np.uint8)
    mask = np.zeros((len(items), n_frames), bool)
    audio = np.zeros((len(items), n_audio), np.float32)
    lengths = np.zeros((len(items), 1), np.int32)
    for k, item in enumerate(items):
        f = len(item.frames)
        if f:
            frames[k, :f] = item.frames
            mask[k, :f] = True
        audio[k, : len(item.audio)] = item.audio
        lengths[k, 0] = len(item.audio)
    out = {"FRAMES": frames, "FRAME_MASK": mask, "AUDIO": audio, "AUDIO_LEN": lengths}
    if any(item.voice is not None for item in items):
        windows = [item.voice if item.voice is not None else item.audio for item in items]
        window = np.zeros((len(items), max(1, max(len(x) for x in windows))), np.float32)
        window_len = np.zeros((len(items), 1), np.int32)
        for k, x in enumerate(windows):
            window[k, :len(x)] = x
            window_len[k, 0] = len(x)
        out["VOICE_WINDOW"], out["VOICE_LEN"] = window, window_len
    return out


def unpack(outputs: dict[str, np.ndarray], items: list[Item]) -> list[Evidence]:
    """The model's per-item outputs as evidence: the unfused face sums and the voice estimate, which
    merge across the pieces of a segment (fusion.merge); the fused outputs are what one whole piece gives."""
    results = []
    for k, item in enumerate(items):
        faces = int(outputs["FACE_COUNT"][k, 0])
        arousal = float(outputs["AROUSAL"][k, 0])
        heard = outputs["VOICE_PROBS"][k] if "VOICE_PROBS" in outputs else None
        cues = outputs["VOICE_CUES"][k] if "VOICE_CUES" in outputs else None
        dims = outputs["VOICE_DIMS"][k] if "VOICE_DIMS" in outputs else None
        results.append(Evidence(
            frames=len(item.frames), faces=faces, face_weight=float(outputs["FACE_SCORE"][k, 0]) * faces,
            face_probs=np.asarray(outputs["FACE_PROBS"][k], np.float64) if faces else None,
            audio_ms=int(len(item.audio) * 1000 // SAMPLE_RATE), speech_ratio=float(outputs["SPEECH_RATIO"][k, 0]),
            arousal=arousal if arousal >= 0 else None,
            voice_probs=np.asarray(heard, np.float64) if heard is not None and heard.any() else None,
            cues=np.asarray(cues, np.float64) if cues is not None and arousal >= 0 else None,
            voice_dims=np.asarray(dims, np.float64) if dims is not None and np.isfinite(dims).any() else None))
    return results


# gRPC statuses that say the request itself is wrong: retrying the same tensors cannot help.
REJECTED = {"StatusCode.INVALID_ARGUMENT", "StatusCode.OUT_OF_RANGE", "StatusCode.UNIMPLEMENTED"}
INFER_TIMEOUT_S = 300.0


def classify(exc: InferenceServerException) -> Exception:
    """Triton said no: about this request's inputs (permanent) or about the server (transient). An
    INTERNAL error from the model could be either; it is retried, and the handler's attempt bound with
    a readiness check turns a request that fails on a healthy server into retries_exhausted."""
    status = str(exc.status() or "")
    if status in REJECTED:
        return BadChunk("inference_rejected", f"{status}: {str(exc.message() or exc)[:300]}")
    return TransientFault(f"Triton inference failed: {exc}", "triton")


OUTPUTS = ("FACE_SCORE", "FACE_PROBS", "FACE_COUNT", "AROUSAL", "SPEECH_RATIO")
VOICE_OUTPUTS = ("VOICE_PROBS", "VOICE_CUES", "VOICE_DIMS")   # asked for where the served config has them
_DTYPES = {"FRAMES": "UINT8", "FRAME_MASK": "BOOL", "AUDIO": "FP32", "AUDIO_LEN": "INT32", "VOICE_WINDOW": "FP32",
           "VOICE_LEN": "INT32"}


class ServedModel:
    """One Triton model the worker calls: its channel, readiness and health."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self._client = grpcclient.InferenceServerClient(url=url, channel_args=CHANNEL_ARGS)

    async def close(self) -> None:
        await self._client.close()

    async def wait_ready(self, wait_s: float = 120.0) -> None:
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            try:
                if await self._client.is_model_ready(self.model):
                    return
            except InferenceServerException:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TransientFault(f"Triton model {self.model!r} at {self.url} not ready after {wait_s}s", "triton")
            await asyncio.sleep(0.5)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self.model, client_timeout=5))
        except Exception:
            return False

    async def call(self, tensors: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray | None]:
        """One inference of the model: the named input tensors in, the named outputs back; Triton's
        refusals sorted into the chunk's fault or the server's (classify)."""
        inputs = []
        for name, value in tensors.items():
            t = grpcclient.InferInput(name, list(value.shape), _DTYPES[name])
            t.set_data_from_numpy(value)
            inputs.append(t)
        try:
            result = await self._client.infer(self.model, inputs, client_timeout=INFER_TIMEOUT_S,
                                              outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
        except InferenceServerException as exc:
            raise classify(exc) from exc
        return {o: result.as_numpy(o) for o in outputs}


class EmotionClient(ServedModel):
    def __init__(self, url: str, model: str = "emotion", batch_items: int = 32) -> None:
        super().__init__(url, model)
        self.batch_items = batch_items
        self.voice_outputs: tuple[str, ...] = ()   # the VOICE_OUTPUTS the model returns (older models lack some)
        self.voice_window_ms = 0   # the audio context its voice-emotion net wants (0: none, send no window)

    async def identity(self) -> tuple[str, str, FusionParams]:
        """(model name, model version, fusion parameters) as the model's config declares them: the name
        and version are stored with every row, the parameters fuse merged pieces as the model fuses items."""
        config = (await self._client.get_model_config(self.model, as_json=True))["config"]
        outputs = {o.get("name") for o in config.get("output", [])}
        self.voice_outputs = tuple(o for o in VOICE_OUTPUTS if o in outputs)
        params = config.get("parameters", {})
        name = params.get("model_name", {}).get("string_value", self.model)
        version = params.get("model_version", {}).get("string_value", "1")
        ratio = float(params.get("min_speech_ratio", {}).get("string_value", MIN_SPEECH_RATIO))
        fusion = params.get("fusion", {}).get("string_value")
        takes_window = any(i.get("name") == "VOICE_WINDOW" for i in config.get("input", []))
        self.voice_window_ms = int(params.get("voice_window_ms", {}).get("string_value", "0")) if takes_window else 0
        return name, version, FusionParams.from_json(fusion) if fusion else FusionParams(min_speech_ratio=ratio)

    async def _infer(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sent = {name: value for name, value in tensors.items()
                if self.voice_window_ms or name not in ("VOICE_WINDOW", "VOICE_LEN")}
        return await self.call(sent, OUTPUTS + self.voice_outputs)  # type: ignore[return-value]

    async def infer(self, items: list[Item], parallel: bool = True) -> list[Evidence]:
        """Group items by frame size, split into batches, run them (concurrently unless `parallel` is
        False: a long chunk then holds one request at a time and live chunks keep their share)."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for idx, item in enumerate(items):
            groups[_frame_key(item)].append(idx)
        batches = [idxs[i:i + self.batch_items] for idxs in groups.values()
                   for i in range(0, len(idxs), self.batch_items)]
        if parallel:
            outputs = await asyncio.gather(*(self._infer(pack([items[i] for i in b])) for b in batches))
        else:
            outputs = [await self._infer(pack([items[i] for i in b])) for b in batches]
        results: list[Evidence | None] = [None] * len(items)
        for batch, out in zip(batches, outputs, strict=True):
            for i, r in zip(batch, unpack(out, [items[i] for i in batch]), strict=True):
                results[i] = r
        return results  # type: ignore[return-value]
