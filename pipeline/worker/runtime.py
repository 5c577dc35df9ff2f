"""The worker's clients and its message handler, as a Faust service: opened when the app starts and
closed when it stops (the Triton channel, the async engine's pool and the S3 client bind to the running
loop). The app (worker/app.py) waits for `ready` before its agent consumes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mode
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.alerts.rules import PhraseRule, Rule
from pipeline.ingest.claimcheck import ClaimCheckStore
from pipeline.media.chunkfile import remove_stale_chunk_files
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import EMPLOYEE_ROLES, Settings
from pipeline.store.db import async_engine
from pipeline.store.writer import SegmentWriter
from pipeline.worker.handler import DeadLetter, MessageHandler
from pipeline.worker.metrics import Metrics
from pipeline.worker.process import ChunkProcessor, ModelRun
from pipeline.worker.speech_client import SpeechClient
from pipeline.worker.triton_client import EmotionClient
from pipeline.worker.words_client import WordsClient

log = logging.getLogger("callstream.worker")

SHADOW_READY_S = 60.0   # how long a starting worker waits for its shadow model before going on without it
TRITON_READY_S = 600.0


def dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task of the worker is waiting, down the chain of awaits (a
    worker that looks stuck says why without a debugger)."""
    for task in asyncio.all_tasks():
        frames: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and len(frames) < 30:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        log.warning("task %s waits in:\n  %s", task.get_name(), "\n  ".join(frames))


class WorkerRuntime(mode.Service):
    def __init__(self, settings: Settings, metrics: Metrics, rules: Sequence[Rule], dead_letter: DeadLetter,
                 publish_alerts: Callable[[str], Awaitable[None]], leftover: Callable[[str], None],
                 **kwargs: Any) -> None:
        """`publish_alerts(call_id)` publishes what a commit recorded (the app owns the alerts topic);
        `leftover(uri)` takes a claim-check object whose delete failed."""
        super().__init__(**kwargs)
        self.settings, self.metrics, self.rules = settings, metrics, list(rules)
        self.dead_letter, self.publish_alerts, self.leftover = dead_letter, publish_alerts, leftover
        self.ready = asyncio.Event()
        self.handler: MessageHandler | None = None
        self.writer: SegmentWriter | None = None
        self.discard: Callable[[str], Awaitable[None]] | None = None
        self.client: EmotionClient | None = None
        self.shadow_client: EmotionClient | None = None
        self.words_client: WordsClient | None = None
        self.speech_client: SpeechClient | None = None
        self.engine: AsyncEngine | None = None

    async def on_start(self) -> None:
        settings, metrics = self.settings, self.metrics
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
        stale = remove_stale_chunk_files()
        if stale:
            log.warning("removed %d chunk file(s) a stopped worker left in scratch storage", len(stale))
        self.client = client = EmotionClient(settings.triton_grpc_url, settings.triton_model,
                                             settings.triton_batch_items)
        await client.wait_ready(wait_s=TRITON_READY_S)
        name, version, fusion = await client.identity()
        shadow, fusions = None, {version: fusion}
        if settings.shadow_model:
            shadow = await self._shadow(version)
            if shadow is not None:
                fusions[shadow.version] = shadow.fusion
        words = None
        if settings.words:
            self.words_client = words = WordsClient(settings.triton_grpc_url, settings.words_model)
            await words.wait_ready(wait_s=TRITON_READY_S)
            await words.identity()
        speech = None
        if settings.measured_roles:
            self.speech_client = speech = SpeechClient(settings.triton_grpc_url, settings.speech_model)
            await speech.wait_ready(wait_s=TRITON_READY_S)
            await speech.identity()
        claims = ClaimCheckStore(settings)
        processor = ChunkProcessor(settings, client, claims, ffmpeg_exe(settings.ffmpeg_binary), name, version,
                                   shadow, lambda exc: metrics.shadow_errors.labels(type(exc).__name__).inc(),
                                   words, speech)
        self.engine = async_engine(settings, pool_size=settings.worker_concurrency)
        self.writer = writer = SegmentWriter(self.engine, settings.segment_ms, fusions, self.rules)
        await writer.register_models((version, name), (shadow.version, shadow.name) if shadow else None)

        async def s3_up() -> bool:
            return await asyncio.to_thread(claims.ping)

        async def park(source: str, payload: bytes) -> str:
            return await asyncio.to_thread(claims.put_dead_letter, source, payload)

        async def discard(uri: str) -> None:
            await asyncio.to_thread(claims.delete, uri)

        self.discard = discard if settings.delete_claim_checks else None
        self.handler = MessageHandler(
            processor, writer, self.dead_letter,
            health={"triton": self._triton_up, "postgres": writer.ping, "object_store": s3_up},
            park_payload=park, retry_initial_s=settings.retry_initial_s, retry_max_s=settings.retry_max_s,
            max_attempts=settings.max_attempts, dlq_inline_limit=settings.dlq_inline_limit_bytes,
            discard_claim=self.discard, metrics=metrics,
            publish_alerts=self.publish_alerts if self.rules else None, leftover=self.leftover,
            default_layout=settings.default_layout)
        metrics.serve(settings.metrics_port)
        self.ready.set()
        log.info("worker ready: model %s (%s) at %s; analysing %s; %d alert rule(s)", name, version,
                 settings.triton_grpc_url, ", ".join(sorted(settings.roles)), len(self.rules))
        if shadow is not None:
            log.info("shadow model %s (%s) runs beside it", settings.shadow_model, shadow.version)
        if words is not None:
            log.info("words: %s (%s); transcripts kept: %s", settings.words_model, words.version,
                     settings.transcripts)
        if speech is not None:
            log.info("speech activity only (talk, silence, overlap; no emotion) of %s: %s (%s)",
                     ", ".join(sorted(settings.measured_roles)), settings.speech_model, speech.version)
            watched = sorted(settings.measured_roles & set(EMPLOYEE_ROLES))
            if watched:
                log.warning("measuring the talk time of %s: not emotion recognition, but monitoring of employees' "
                            "work, which data protection and employment law regulate (docs/COMPLIANCE.md)",
                            " and ".join(watched))
        phrases = [r.name for r in self.rules if isinstance(r, PhraseRule)]
        if phrases and words is None:
            log.warning("alert rule(s) %s match phrases, which only CALLSTREAM_WORDS=true hears: they never fire",
                        ", ".join(phrases))
        employees = sorted(settings.roles & set(EMPLOYEE_ROLES))
        if employees:
            log.warning("analysing the emotions of %s: emotion recognition of employees at work is prohibited "
                        "in the EU by the AI Act, Article 5(1)(f), except for medical or safety reasons",
                        " and ".join(employees))

    async def _triton_up(self) -> bool:
        """Every model a chunk needs is served (the words and speech models too, where they are on)."""
        clients = [c for c in (self.client, self.words_client, self.speech_client) if c is not None]
        return all(await asyncio.gather(*(c.ping() for c in clients)))

    async def _shadow(self, primary_version: str) -> ModelRun | None:
        """The shadow model, or None (logged, counted) when it is not served within a minute: a
        missing shadow must not keep the primary from working."""
        settings = self.settings
        self.shadow_client = client = EmotionClient(settings.triton_grpc_url, settings.shadow_model,
                                                    settings.triton_batch_items)
        try:
            await client.wait_ready(wait_s=SHADOW_READY_S)
            name, version, fusion = await client.identity()
        except Exception as exc:  # not served, not ready, no config: the primary goes on alone
            log.error("shadow model %s unavailable, running without it: %s", settings.shadow_model, exc)
            self.metrics.shadow_errors.labels(type(exc).__name__).inc()
            return None
        if version == primary_version:
            raise SystemExit(f"CALLSTREAM_SHADOW_MODEL={settings.shadow_model} serves {version}, the "
                             "primary's own version: a shadow must be another version")
        return ModelRun(client, name, version, fusion=fusion)

    async def on_stop(self) -> None:
        for c in (self.client, self.shadow_client, self.words_client, self.speech_client):
            if c is not None:
                await c.close()
        if self.engine is not None:
            await self.engine.dispose()
