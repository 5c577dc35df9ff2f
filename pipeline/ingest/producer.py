"""Publishing chunks with kafka-python: key = call id, metadata in headers, claim check above a size.

`ChunkPublisher` is the Python API for recorder integrations; `publish_recording` is what
`callstream produce` does with a file.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from kafka import KafkaProducer

from pipeline.contract import ChunkMeta
from pipeline.ingest.claimcheck import ClaimCheckStore
from pipeline.ingest.topics import ensure_topics
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings


class ChunkPublisher:
    def __init__(self, settings: Settings, create_topics: bool = True) -> None:
        self.settings = settings
        if create_topics:
            ensure_topics(settings)
        self.producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5, retries=10,
            max_request_size=max(settings.inline_limit_bytes * 2, 1_048_576), client_id="callstream-producer")
        self._claims: ClaimCheckStore | None = None

    def publish(self, meta: ChunkMeta, payload: bytes) -> ChunkMeta:
        if len(payload) > self.settings.inline_limit_bytes:
            if self._claims is None:
                self._claims = ClaimCheckStore(self.settings)
            meta = replace(meta, claim_check=self._claims.put(meta.call_id, meta.seq, payload))
            payload = b""
        meta = replace(meta, published_at_ms=int(time.time() * 1000))
        self.producer.send(self.settings.chunks_topic, key=meta.call_id.encode(), value=payload,
                           headers=meta.headers())
        return meta

    def publish_raw(self, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]],
                    topic: str | None = None) -> None:
        """Send exactly what is given: for recorders with their own framing, and for tests of bad input."""
        self.producer.send(topic or self.settings.chunks_topic, key=key, value=value, headers=headers)

    def flush(self) -> None:
        self.producer.flush(timeout=60)

    def close(self) -> None:
        self.producer.flush(timeout=60)
        self.producer.close(timeout=10)

    def __enter__(self) -> "ChunkPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def publish_recording(settings: Settings, recording: Path, call_id: str, *, layout: str | None = None,
                      chunk_seconds: float | None = None, realtime: bool = False,
                      on_chunk: Callable[[ChunkMeta, int], None] | None = None,
                      publisher: ChunkPublisher | None = None) -> list[ChunkMeta]:
    """Cut `recording` and publish every chunk; with `realtime`, pace them as a live recorder would."""
    chunks = cut(ffmpeg_exe(settings.ffmpeg_binary), recording, chunk_seconds or settings.chunk_seconds)
    started = datetime.now(timezone.utc)
    own = publisher is None
    pub = publisher or ChunkPublisher(settings)
    sent: list[ChunkMeta] = []
    t0 = time.monotonic()
    try:
        for chunk in chunks:
            if realtime:
                # A live recorder can only publish a chunk once its last moment has been recorded.
                delay = chunk.end_ms / 1000 - (time.monotonic() - t0)
                if delay > 0:
                    time.sleep(delay)
            meta = ChunkMeta(call_id=call_id, seq=chunk.seq, start_ms=chunk.start_ms,
                             duration_ms=chunk.end_ms - chunk.start_ms, end_of_call=chunk.seq == len(chunks) - 1,
                             layout=layout, content_type="video/x-matroska", call_started_at=started)
            payload = chunk.path.read_bytes()
            sent.append(pub.publish(meta, payload))
            if realtime:
                pub.flush()
            if on_chunk:
                on_chunk(sent[-1], len(payload))
            chunk.path.unlink(missing_ok=True)
        pub.flush()
    finally:
        if own:
            pub.close()
    return sent
