"""One chunk, start to rows: payload (inline or claim check), decode, segments, inference.

Raises BadChunk for anything wrong with the chunk itself and TransientFault when a dependency is
down; returns rows ready for the writer otherwise.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.contract import ChunkMeta
from pipeline.errors import BadChunk
from pipeline.inference.client import EmotionClient, Item
from pipeline.inference.labels import DFEW_LABELS
from pipeline.ingest.claimcheck import ClaimCheckStore
from pipeline.media.decode import AUDIO_RATE, Decoded, decode, scratch_dir
from pipeline.media.segment import frame_indices, sample_range, segments, track_views
from pipeline.settings import Settings


@dataclass
class Timings:
    fetch_ms: float = 0.0
    decode_ms: float = 0.0
    inference_ms: float = 0.0
    size_bytes: int = 0


def decode_bytes(ffmpeg_bin: str, payload: bytes, fps: float, width: int, fast: bool = True) -> Decoded:
    fd, name = tempfile.mkstemp(prefix="callstream-chunk-", dir=scratch_dir())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        return decode(ffmpeg_bin, Path(name), fps, width, fast=fast)
    finally:
        os.unlink(name)


def build_items(meta: ChunkMeta, decoded: Decoded, layout: str, segment_ms: int) -> tuple[list[tuple[str, int, int]], list[Item]]:
    """Pure: cut the decoded chunk into (track, segment) items for the model."""
    width = decoded.frames.shape[2] if len(decoded.frames) else None
    channels = decoded.audio.shape[0] if decoded.audio.size else 0
    keys, items = [], []
    empty_frames = np.zeros((0, 1, 1, 3), np.uint8)
    empty_audio = np.zeros(0, np.float32)
    duration = meta.duration_ms or decoded.duration_ms
    for seg in segments(meta.start_ms, duration, segment_ms):
        idx = frame_indices(seg, meta.start_ms, decoded.fps, len(decoded.frames)) if width else None
        for view in track_views(layout, width, channels):
            frames = empty_frames
            if view.x0 is not None and idx is not None and len(idx):
                frames = np.ascontiguousarray(decoded.frames[idx][:, :, view.x0:view.x1])
            audio = empty_audio
            if view.channel is not None:
                audio = decoded.audio[view.channel, sample_range(seg, meta.start_ms, AUDIO_RATE, decoded.audio.shape[1])]
            keys.append((view.track, seg.start_ms, seg.end_ms))
            items.append(Item(frames, audio))
    return keys, items


class ChunkProcessor:
    def __init__(self, settings: Settings, client: EmotionClient, claims: ClaimCheckStore | None,
                 ffmpeg_bin: str, model_name: str, model_version: str) -> None:
        self.settings, self.client, self.claims = settings, client, claims
        self.ffmpeg_bin, self.model_name, self.model_version = ffmpeg_bin, model_name, model_version

    async def payload(self, meta: ChunkMeta, value: bytes | None, t: Timings) -> bytes:
        limit = self.settings.max_chunk_bytes
        if meta.claim_check:
            if value:
                raise BadChunk("malformed_header", "message has both a payload and a claim-check header")
            if self.claims is None:
                raise BadChunk("claim_check_missing", "no object store configured")
            start = time.perf_counter()
            payload = await asyncio.to_thread(self.claims.get, meta.claim_check, limit)
            t.fetch_ms = (time.perf_counter() - start) * 1000
        else:
            payload = value or b""
        if not payload:
            raise BadChunk("empty_value", "message value is empty and there is no claim-check header")
        if len(payload) > limit:
            raise BadChunk("too_large", f"{len(payload)} B > CALLSTREAM_MAX_CHUNK_BYTES={limit}")
        t.size_bytes = len(payload)
        return payload

    async def process(self, meta: ChunkMeta, value: bytes | None) -> tuple[list[dict], Timings]:
        t = Timings()
        payload = await self.payload(meta, value, t)
        start = time.perf_counter()
        decoded = await asyncio.to_thread(decode_bytes, self.ffmpeg_bin, payload, self.settings.sample_fps,
                                          self.settings.frame_width, self.settings.fast_decode)
        t.decode_ms = (time.perf_counter() - start) * 1000
        layout = meta.layout or self.settings.default_layout
        keys, items = build_items(meta, decoded, layout, self.settings.segment_ms)
        start = time.perf_counter()
        results = await self.client.infer(items) if items else []
        t.inference_ms = (time.perf_counter() - start) * 1000
        rows = []
        for (track, seg_start, seg_end), r in zip(keys, results):
            probs = dict.fromkeys(DFEW_LABELS) if r.probs is None else {
                label: float(p) for label, p in zip(DFEW_LABELS, r.probs)}
            rows.append({
                "call_id": meta.call_id, "track": track, "start_ms": seg_start, "end_ms": seg_end,
                "model_version": self.model_version, "model_name": self.model_name, **probs,
                "label": r.label, "confidence": r.confidence, "face_found": r.face_found,
                "speech_found": r.speech_found, "face_score": r.face_score if r.face_found else None,
                "arousal": r.arousal, "speech_ratio": r.speech_ratio, "chunk_seq": meta.seq,
            })
        return rows, t
