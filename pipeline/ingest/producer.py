"""Publishing chunks with kafka-python: key = call id, metadata in headers, claim check above a size.

`ChunkPublisher` is the Python API for recorder integrations; `publish_recording` is what
`callstream produce` does with a file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from pipeline.contract import ChunkMeta
from pipeline.ingest.claimcheck import ClaimCheckStore
from pipeline.ingest.security import kafka_python_kwargs
from pipeline.ingest.topics import ensure_topics
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings


class PublishError(RuntimeError):
    """Some chunks were not acknowledged by the broker (or their payload not stored); names them."""

    def __init__(self, failed: dict[int, str], sent: int) -> None:
        self.failed, self.sent = failed, sent
        listed = ", ".join(f"seq {seq}: {why}" for seq, why in sorted(failed.items())[:20])
        super().__init__(f"{len(failed)} of {sent + len(failed)} chunks were not published ({listed})")


class ChunkPublisher:
    def __init__(self, settings: Settings, create_topics: bool = True) -> None:
        self.settings = settings
        if create_topics:
            ensure_topics(settings)
        self.producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5, retries=10,
            max_request_size=max(settings.inline_limit_bytes * 2, 1_048_576), client_id="callstream-producer",
            **kafka_python_kwargs(settings))
        self._claims: ClaimCheckStore | None = None
        self._pending: list[tuple[int, Any]] = []

    def publish(self, meta: ChunkMeta, payload: bytes) -> ChunkMeta:
        """Send one chunk (storing a large payload first); `wait()` reports whether the broker took it."""
        if len(payload) > self.settings.inline_limit_bytes:
            if self._claims is None:
                self._claims = ClaimCheckStore(self.settings)
            claims = self._claims
            meta = replace(meta, claim_check=_retry(lambda: claims.put(meta.call_id, meta.seq, payload)))
            payload = b""
        meta = replace(meta, published_at_ms=int(time.time() * 1000))
        future = self.producer.send(self.settings.chunks_topic, key=meta.call_id.encode(), value=payload,
                                    headers=meta.headers())
        self._pending.append((meta.seq, future))
        return meta

    def wait(self, timeout: float = 60.0) -> None:
        """Block until every chunk sent so far is acknowledged (acks=all); raise PublishError naming
        those that were not. A recorder must know, not guess, that its chunks are in the log."""
        self.producer.flush(timeout=timeout)
        failed: dict[int, str] = {}
        ok = 0
        for seq, future in self._pending:
            try:
                future.get(timeout=max(1.0, timeout))
                ok += 1
            except Exception as exc:  # KafkaError, timeout: the chunk is not known to be in the log
                failed[seq] = _why(exc)
        self._pending.clear()
        if failed:
            raise PublishError(failed, ok)

    def publish_raw(self, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]],
                    topic: str | None = None, partition: int | None = None) -> None:
        """Send exactly what is given: for recorders with their own framing, and for tests of bad input."""
        future = self.producer.send(topic or self.settings.chunks_topic, key=key, value=value, headers=headers,
                                    partition=partition)
        self._pending.append((-1, future))

    def flush(self) -> None:
        self.producer.flush(timeout=60)

    def close(self) -> None:
        try:
            self.producer.flush(timeout=60)
        finally:
            self.producer.close(timeout=10)

    def __enter__(self) -> ChunkPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def _retry(fn: Callable[[], str], attempts: int = 5, delay: float = 0.5) -> str:
    """A claim-check upload is retried a few times before the chunk counts as not published."""
    for i in range(attempts):
        try:
            return fn()
        except Exception:
            if i == attempts - 1:
                raise
            time.sleep(delay * 2 ** i)
    raise AssertionError("unreachable")


def publish_recording(settings: Settings, recording: Path, call_id: str, *, layout: str | None = None,
                      chunk_seconds: float | None = None, realtime: bool = False,
                      on_chunk: Callable[[ChunkMeta, int], None] | None = None,
                      publisher: ChunkPublisher | None = None) -> list[ChunkMeta]:
    """Cut `recording` and publish every chunk; with `realtime`, pace them as a live recorder would."""
    chunks = cut(ffmpeg_exe(settings.ffmpeg_binary), recording, chunk_seconds or settings.chunk_seconds)
    started = datetime.now(UTC)
    own = publisher is None
    pub = publisher or ChunkPublisher(settings)
    sent: list[ChunkMeta] = []
    t0 = time.monotonic()
    failed: dict[int, str] = {}
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
            try:
                sent.append(pub.publish(meta, payload))
            except Exception as exc:  # the payload could not be stored or the send not even queued
                failed[meta.seq] = _why(exc)
                continue
            finally:
                chunk.path.unlink(missing_ok=True)
            if realtime:
                pub.flush()
            if on_chunk:
                on_chunk(sent[-1], len(payload))
        try:
            pub.wait()
        except PublishError as exc:
            failed.update(exc.failed)
    finally:
        if own:
            pub.close()
    if failed:
        raise PublishError(failed, sum(m.seq not in failed for m in sent))
    return sent
