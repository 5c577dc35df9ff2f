"""Publishing chunks with kafka-python: key = call id, metadata in headers, claim check above a size.

`ChunkPublisher` is the Python API for recorder integrations; `publish_recording` is what
`callstream produce` does with a file.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from pipeline.contract import ChunkMeta
from pipeline.ingest.claimcheck import ClaimCheckStore
from pipeline.ingest.security import kafka_python_kwargs
from pipeline.ingest.topics import bootstrap_within, ensure_topics
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.media.probe import probe
from pipeline.settings import Settings


def label(meta: ChunkMeta) -> str:
    """How a chunk is named to the user: its seq, in its participant stream if it has one."""
    return f"{meta.stream} seq {meta.seq}" if meta.stream else f"seq {meta.seq}"


class PublishError(RuntimeError):
    """Some chunks were not acknowledged by the broker (or their payload not stored); names them."""

    def __init__(self, failed: dict[str, str], sent: int) -> None:
        self.failed, self.sent = failed, sent
        listed = ", ".join(f"{name}: {why}" for name, why in sorted(failed.items())[:20])
        super().__init__(f"{len(failed)} of {sent + len(failed)} chunks were not published ({listed})")


class ChunkPublisher:
    def __init__(self, settings: Settings, create_topics: bool = True, connect_timeout_s: float = 30.0) -> None:
        """`connect_timeout_s`: how long to wait for the broker to answer at all (a worker starting beside a
        broker waits; a command a user typed fails fast)."""
        self.settings = settings
        if create_topics:
            ensure_topics(settings, timeout=connect_timeout_s)
        self.producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5, retries=10,
            max_request_size=max(settings.inline_limit_bytes * 2, 1_048_576), client_id="callstream-producer",
            **bootstrap_within(KafkaProducer, connect_timeout_s), **kafka_python_kwargs(settings))
        self._claims: ClaimCheckStore | None = None
        self._pending: list[tuple[str, Any]] = []

    def publish(self, meta: ChunkMeta, payload: bytes) -> ChunkMeta:
        """Send one chunk (storing a large payload first); `wait()` reports whether the broker took it."""
        if len(payload) > self.settings.inline_limit_bytes:
            if self._claims is None:
                self._claims = ClaimCheckStore(self.settings)
            claims = self._claims
            meta = replace(meta, claim_check=_retry(lambda: claims.put(meta.call_id, meta.seq, payload, meta.stream)))
            payload = b""
        meta = replace(meta, published_at_ms=int(time.time() * 1000))
        future = self.producer.send(self.settings.chunks_topic, key=meta.call_id.encode(), value=payload,
                                    headers=meta.headers())
        self._pending.append((label(meta), future))
        return meta

    def wait(self, timeout: float = 60.0) -> list[Any]:
        """Block until every chunk sent so far is acknowledged (acks=all); raise PublishError naming
        those that were not. A recorder must know, not guess, that its chunks are in the log. Returns
        where each landed (the broker's RecordMetadata: partition and offset), in the order sent."""
        self.producer.flush(timeout=timeout)
        failed: dict[str, str] = {}
        landed = []
        for name, future in self._pending:
            try:
                landed.append(future.get(timeout=max(1.0, timeout)))
            except Exception as exc:  # KafkaError, timeout: the chunk is not known to be in the log
                failed[name] = _why(exc)
        self._pending.clear()
        if failed:
            raise PublishError(failed, len(landed))
        return landed

    def publish_raw(self, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]],
                    topic: str | None = None, partition: int | None = None) -> None:
        """Send exactly what is given: for recorders with their own framing, and for tests of bad input."""
        future = self.producer.send(topic or self.settings.chunks_topic, key=key, value=value, headers=headers,
                                    partition=partition)
        self._pending.append(("raw", future))

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


@dataclass(frozen=True)
class Upload:
    """One chunk file to publish: where it sits in call time and whose it is."""
    path: Path
    seq: int
    start_ms: int
    end_ms: int
    end_of_call: bool
    participant_id: str | None = None
    role: str | None = None
    media: str = "av"
    layout: str | None = None
    delete_after: bool = True

    def meta(self, call_id: str, started: datetime | None = None) -> ChunkMeta:
        return ChunkMeta(call_id=call_id, seq=self.seq, start_ms=self.start_ms, duration_ms=self.end_ms - self.start_ms,
                         end_of_call=self.end_of_call, layout=self.layout, content_type=_content_type(self.path),
                         call_started_at=started, participant_id=self.participant_id, role=self.role,
                         media=self.media if self.participant_id else "av")


def publish_uploads(settings: Settings, call_id: str, uploads: list[Upload], *, realtime: bool = False,
                    on_chunk: Callable[[ChunkMeta, int], None] | None = None,
                    publisher: ChunkPublisher | None = None) -> list[ChunkMeta]:
    """Publish chunk files in call-time order; with `realtime`, as a live recorder would (each once its
    last moment has been recorded). Raises PublishError naming what the broker did not acknowledge."""
    started = datetime.now(UTC)
    own = publisher is None
    pub = publisher or ChunkPublisher(settings)
    sent: list[ChunkMeta] = []
    t0 = time.monotonic()
    failed: dict[str, str] = {}
    try:
        for up in sorted(uploads, key=lambda u: (u.end_ms, u.participant_id or "", u.media, u.seq)):
            if realtime:
                delay = up.end_ms / 1000 - (time.monotonic() - t0)
                if delay > 0:
                    time.sleep(delay)
            meta = up.meta(call_id, started)
            try:
                payload = up.path.read_bytes()
                sent.append(pub.publish(meta, payload))
            except Exception as exc:  # the payload could not be stored or the send not even queued
                failed[label(meta)] = _why(exc)
                continue
            finally:
                if up.delete_after:
                    up.path.unlink(missing_ok=True)
                    if up.path.parent.name.startswith("callstream-cut-"):
                        with contextlib.suppress(OSError):   # the cut's folder, once its last chunk is gone
                            up.path.parent.rmdir()
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
        raise PublishError(failed, sum(label(m) not in failed for m in sent))
    return sent


def _content_type(path: Path) -> str:
    return {".mkv": "video/x-matroska", ".mka": "audio/x-matroska", ".mp4": "video/mp4", ".webm": "video/webm",
            ".wav": "audio/wav", ".ogg": "audio/ogg"}.get(path.suffix.lower(), "application/octet-stream")


def media_kind(settings: Settings, path: Path) -> str:
    """av, audio or video: which tracks a participant's file has."""
    info = probe(ffmpeg_exe(settings.ffmpeg_binary), Path(path))
    return "av" if info.video and info.audio else "video" if info.video else "audio"


def participant_uploads(settings: Settings, participant_id: str, role: str, recording: Path, offset_ms: int = 0,
                        chunk_seconds: float | None = None) -> list[Upload]:
    """One participant's recording (a Twilio or LiveKit track file, one direction of a phone call) cut
    into chunks of its own stream, placed `offset_ms` into the call."""
    media = media_kind(settings, recording)
    chunks = cut(ffmpeg_exe(settings.ffmpeg_binary), recording, chunk_seconds or settings.chunk_seconds)
    return [Upload(c.path, c.seq, offset_ms + c.start_ms, offset_ms + c.end_ms, c.seq == len(chunks) - 1,
                   participant_id, role, media) for c in chunks]


# Amazon Chime SDK media capture: 2021-11-30-20-43-12-345-<attendeeId>.mp4 (or <epoch ms>-<attendeeId>.mp4);
# mixed audio files carry the time only.
_CHIME_TIME = re.compile(r"^(?P<t>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}|\d{13})"
                         r"(?:-(?P<who>[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}))?$")


def chime_uploads(settings: Settings, folder: Path, roles: dict[str, str], default_role: str = "other",
                  mixed_audio: bool = False) -> list[Upload]:
    """A Chime-style capture folder: every per-attendee file is already a chunk of that attendee's video
    stream, placed by its UTC start time relative to the earliest file. Mixed-audio files (no attendee)
    are published as participant `mixed` (role other) only when asked: nobody's voice in particular."""
    found = []
    for path in sorted(Path(folder).rglob("*.mp4")):
        m = _CHIME_TIME.match(path.stem)
        if not m:
            continue
        t = m.group("t")
        epoch_ms = int(t) if t.isdigit() else int(datetime.strptime(t[:-4], "%Y-%m-%d-%H-%M-%S")
                                                    .replace(tzinfo=UTC).timestamp() * 1000) + int(t[-3:])
        who = m.group("who")
        if who is None and not mixed_audio:
            continue
        found.append((epoch_ms, who or "mixed", path))
    if not found:
        raise FileNotFoundError(f"no Chime-style <time>-<attendee>.mp4 files under {folder}")
    origin = min(t for t, _, _ in found)
    ffmpeg_bin = ffmpeg_exe(settings.ffmpeg_binary)
    uploads: list[Upload] = []
    for who in sorted({w for _, w, _ in found}):
        files = sorted((t, p) for t, w, p in found if w == who)
        for seq, (t, path) in enumerate(files):
            info = probe(ffmpeg_bin, path)
            start = t - origin
            length = info.duration_ms or int(settings.chunk_seconds * 1000)
            media = "audio" if who == "mixed" else ("av" if info.audio and info.video else
                                                   "video" if info.video else "audio")
            uploads.append(Upload(path, seq, start, start + length, seq == len(files) - 1, who,
                                  "other" if who == "mixed" else roles.get(who, default_role), media,
                                  delete_after=False))
    return uploads


def publish_recording(settings: Settings, recording: Path, call_id: str, *, layout: str | None = None,
                      chunk_seconds: float | None = None, realtime: bool = False,
                      on_chunk: Callable[[ChunkMeta, int], None] | None = None,
                      publisher: ChunkPublisher | None = None) -> list[ChunkMeta]:
    """Cut `recording` (a whole-call recording, v1 layouts) and publish every chunk."""
    uploads = recording_uploads(settings, recording, layout, chunk_seconds)
    return publish_uploads(settings, call_id, uploads, realtime=realtime, on_chunk=on_chunk, publisher=publisher)


def recording_uploads(settings: Settings, recording: Path, layout: str | None = None,
                      chunk_seconds: float | None = None) -> list[Upload]:
    """A whole-call recording (v1 layouts) cut into chunks of the call's one stream."""
    chunks = cut(ffmpeg_exe(settings.ffmpeg_binary), recording, chunk_seconds or settings.chunk_seconds)
    return [Upload(c.path, c.seq, c.start_ms, c.end_ms, c.seq == len(chunks) - 1, layout=layout) for c in chunks]
