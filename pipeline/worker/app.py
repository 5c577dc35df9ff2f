"""The Faust app: one agent on the chunks topic, a dead-letter topic, nothing else.

The agent hands its stream to the ordered-ack loop (worker/consume.py), which runs up to
`worker_concurrency` messages at once, so ffmpeg, Triton and Postgres overlap and one slow chunk does
not hold the others up, and acknowledges each partition's offsets strictly in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import faust
import mode
from faust.types import TP
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.alerts.rules import load_rules
from pipeline.inference.client import EmotionClient
from pipeline.ingest.claimcheck import ClaimCheckStore
from pipeline.ingest.security import faust_credentials
from pipeline.media.decode import remove_stale_chunk_files
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import EMPLOYEE_ROLES, Settings
from pipeline.store.db import async_engine
from pipeline.store.writer import SegmentWriter
from pipeline.worker.consume import Assignment, OffsetGate, consume
from pipeline.worker.handler import MessageHandler
from pipeline.worker.leftovers import PendingDeletes
from pipeline.worker.metrics import Metrics
from pipeline.worker.process import ChunkProcessor, ModelRun

log = logging.getLogger("callstream.worker")


class FaustPartitions:
    """The consumer as the ordered-ack loop sees it. Faust keeps its own TP type in the sets it pauses
    and resumes (and asserts on it), while a message's `tp` comes from the Kafka client: convert."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def assignment(self) -> Any:
        return self.app.consumer.assignment()

    def pause_partitions(self, tps: Any) -> None:
        self.app.consumer.pause_partitions({TP(tp.topic, tp.partition) for tp in tps})

    def resume_partitions(self, tps: Any) -> None:
        self.app.consumer.resume_partitions({TP(tp.topic, tp.partition) for tp in tps})


LAG_INTERVAL_S = 5.0
ALERT_SWEEP_S = 5.0
CLAIM_SWEEP_S = 10.0
SESSION_TIMEOUT_S = 6.0   # the consumer's group session: a worker silent this long loses its partitions
SHADOW_READY_S = 60.0   # how long a starting worker waits for its shadow model before going on without it


async def watch_lag(app: faust.App, topic: str, gate: OffsetGate, acked_next: dict[Any, int],
                    metrics: Metrics) -> None:
    """Consumer lag per assigned partition: the high watermark minus the next offset not yet settled
    (in flight, else after the last acknowledged, else the fetch position)."""
    shown: set[Any] = set()
    while True:
        await asyncio.sleep(LAG_INTERVAL_S)
        try:
            assigned = {tp for tp in app.consumer.assignment() if tp.topic == topic}
            for tp in assigned:
                high = app.consumer.highwater(tp)
                nxt = gate.lowest(tp)
                if nxt is None:
                    nxt = acked_next.get(tp)
                if nxt is None:
                    nxt = await app.consumer.position(tp)
                if high is None or nxt is None:
                    continue
                # A next offset past the high watermark means the broker's watermark is behind: the lag
                # is unknown (NaN), not 0, so an alert on it neither fires nor clears on a false figure.
                metrics.lag.labels(tp.topic, str(tp.partition)).set(high - nxt if nxt <= high else float("nan"))
            for tp in shown - assigned:  # revoked: another worker reports it now
                metrics.lag.remove(tp.topic, str(tp.partition))
            shown = assigned
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. during a rebalance: the next round reports again
            log.debug("lag not measured this round: %s", exc)


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


EXIT_CODE = {"code": 0}
LOOP_LAG_WARN_S = 0.1


async def watch_loop_lag(owned: Assignment, interval: float = 0.05) -> None:
    """Long work must never hold the event loop (heartbeats and the other chunks run on it): say so
    when a wake-up comes more than 100 ms late, with the worst lag since the last warning. A lag longer
    than the group session means the process was stopped and has lost its partitions: suspend all
    work until the group assigns partitions again."""
    loop = asyncio.get_running_loop()
    worst, last_warn = 0.0, 0.0
    while True:
        t = loop.time()
        await asyncio.sleep(interval)
        lag = loop.time() - t - interval
        if lag > SESSION_TIMEOUT_S and not owned.suspended:
            owned.suspended = True
            log.warning("this worker was stopped for %.0f s, longer than its group session: its partitions are "
                        "presumed lost, nothing in flight is written until the group assigns them again", lag)
        worst = max(worst, lag)
        if lag > LOOP_LAG_WARN_S and loop.time() - last_warn > 10:
            log.warning("event loop blocked for %.0f ms (worst since last warning %.0f ms)", lag * 1000, worst * 1000)
            worst, last_warn = 0.0, loop.time()


def create_app(settings: Settings) -> faust.App:
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        key_serializer="raw", value_serializer="raw",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        # Short session and rebalance timeouts: a joining or leaving worker rebalances in seconds.
        broker_session_timeout=SESSION_TIMEOUT_S, broker_rebalance_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=1.0,
        broker_commit_every=50, broker_commit_interval=1.0,
        consumer_max_fetch_size=16 * 1024 * 1024, producer_max_request_size=16 * 1024 * 1024,
        stream_buffer_maxsize=settings.worker_concurrency * 2,
        web_enabled=settings.worker_web_port > 0, web_port=settings.worker_web_port or 6066,
        store="memory://", table_cleanup_interval=3600.0,
        # A revocation does not wait for the chunks in flight to finish: they are cancelled and their
        # new owner processes them (a stopped worker would otherwise finish them after losing them).
        stream_wait_empty=False,
        # Faust makes a `<app id>-data` folder for table state even with the memory store: keep it with
        # the rest of the state, not in whatever directory the worker was started from.
        datadir=str(settings.state_dir / "faust" / "{conf.name}-data"),
        broker_credentials=faust_credentials(settings),
    )
    chunks = app.topic(settings.chunks_topic, key_type=bytes, value_type=bytes,
                       partitions=settings.partitions)
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes)
    alerts = app.topic(settings.alerts_topic, key_type=bytes, value_type=bytes)
    rules = load_rules(settings.alert_rules)  # validated before anything starts: a bad file stops the worker
    runtime: dict[str, Any] = {}
    ready = asyncio.Event()
    metrics = Metrics()
    owned = Assignment()
    gate = OffsetGate()
    acked_next: dict[Any, int] = {}
    leftovers = PendingDeletes()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Work on a partition this worker no longer owns must never write: cancel it. (Faust sends the
        revoked set as the signal's one argument.)"""
        revoked = args[0] if args else kwargs.get("revoked", ())
        tps = [tp for tp in revoked if tp.topic == settings.chunks_topic]
        cancelled = owned.revoke(tps)
        for tp in tps:
            gate.forget(tp)
            acked_next.pop(tp, None)
        if cancelled:
            log.warning("partitions %s revoked: %d chunk(s) in flight cancelled; their new owner processes "
                        "them", sorted(tp.partition for tp in tps), cancelled)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """The group has said what is ours again (Faust seeks each partition to its committed offset)."""
        if owned.suspended:
            log.info("partitions assigned again after the stop: resuming work")
        owned.suspended = False

    async def dead_letter(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        fut = await dlq.send(key=key, value=value, headers=headers)
        await fut

    async def send_alert(key: bytes, value: bytes) -> None:
        await (await alerts.send(key=key, value=value))

    async def publish_alerts(call_id: str | None = None) -> None:
        writer = runtime.get("writer")
        if writer is None:
            return
        for rule in await writer.publish_pending(send_alert, call_id):
            metrics.alerts.labels(rule).inc()
            log.info("alert %s published for call %s", rule, call_id or "(sweep)")

    @app.timer(interval=ALERT_SWEEP_S)
    async def sweep_alerts() -> None:
        """Alerts whose publication failed after their commit (broker down, worker stopped) go out here."""
        if rules and ready.is_set():
            try:
                await publish_alerts()
            except Exception as exc:
                log.warning("alert sweep: %s", exc)

    @app.timer(interval=CLAIM_SWEEP_S)
    async def sweep_claims() -> None:
        """Claim-check objects whose delete failed are deleted once the object store is back."""
        discard = runtime.get("discard")
        if discard is not None and len(leftovers):
            n = await leftovers.retry(discard)
            if n:
                log.info("deleted %d claim-check object(s) left over from an object-store outage", n)

    @app.service
    class WorkerRuntime(mode.Service):
        """The worker's clients, opened when the app starts and closed when it stops (Faust's service
        idiom): the Triton channel, the async engine's pool and the S3 client bind to the running loop."""

        client: EmotionClient | None = None
        shadow_client: EmotionClient | None = None
        engine: AsyncEngine | None = None

        async def on_start(self) -> None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
            stale = remove_stale_chunk_files()
            if stale:
                log.warning("removed %d chunk file(s) a stopped worker left in scratch storage", len(stale))
            self.client = client = EmotionClient(settings.triton_grpc_url, settings.triton_model,
                                                 settings.triton_batch_items)
            await client.wait_ready(wait_s=600)
            name, version, fusion = await client.identity()
            shadow, fusions = None, {version: fusion}
            if settings.shadow_model:
                shadow = await self._shadow(version)
                if shadow is not None:
                    fusions[shadow.version] = shadow.fusion
            claims = ClaimCheckStore(settings)
            processor = ChunkProcessor(settings, client, claims, ffmpeg_exe(settings.ffmpeg_binary), name, version,
                                       shadow, lambda exc: metrics.shadow_errors.labels(type(exc).__name__).inc())
            self.engine = async_engine(settings, pool_size=settings.worker_concurrency)
            writer = SegmentWriter(self.engine, settings.segment_ms, fusions, rules)
            runtime["writer"] = writer

            async def s3_up() -> bool:
                return await asyncio.to_thread(claims.ping)

            async def park(source: str, payload: bytes) -> str:
                return await asyncio.to_thread(claims.put_dead_letter, source, payload)

            async def discard(uri: str) -> None:
                await asyncio.to_thread(claims.delete, uri)

            runtime["discard"] = discard if settings.delete_claim_checks else None

            runtime["handler"] = MessageHandler(
                processor, writer, dead_letter,
                health={"triton": client.ping, "postgres": writer.ping, "object_store": s3_up},
                park_payload=park, retry_initial_s=settings.retry_initial_s, retry_max_s=settings.retry_max_s,
                max_attempts=settings.max_attempts, dlq_inline_limit=settings.dlq_inline_limit_bytes,
                discard_claim=discard if settings.delete_claim_checks else None, metrics=metrics,
                publish_alerts=publish_alerts if rules else None, leftover=leftovers.add,
                pause_limit_s=SESSION_TIMEOUT_S)
            metrics.serve(settings.metrics_port)
            ready.set()
            log.info("worker ready: model %s (%s) at %s; analysing %s; %d alert rule(s)", name, version,
                     settings.triton_grpc_url, ", ".join(sorted(settings.roles)), len(rules))
            if shadow is not None:
                log.info("shadow model %s (%s) runs beside it", settings.shadow_model, shadow.version)
            employees = sorted(settings.roles & set(EMPLOYEE_ROLES))
            if employees:
                log.warning("analysing the emotions of %s: emotion recognition of employees at work is prohibited "
                            "in the EU by the AI Act, Article 5(1)(f), except for medical or safety reasons",
                            " and ".join(employees))

        async def _shadow(self, primary_version: str) -> ModelRun | None:
            """The shadow model, or None (logged, counted) when it is not served within a minute: a
            missing shadow must not keep the primary from working."""
            self.shadow_client = client = EmotionClient(settings.triton_grpc_url, settings.shadow_model,
                                                        settings.triton_batch_items)
            try:
                await client.wait_ready(wait_s=SHADOW_READY_S)
                name, version, fusion = await client.identity()
            except Exception as exc:  # not served, not ready, no config: the primary goes on alone
                log.error("shadow model %s unavailable, running without it: %s", settings.shadow_model, exc)
                metrics.shadow_errors.labels(type(exc).__name__).inc()
                return None
            if version == primary_version:
                raise SystemExit(f"CALLSTREAM_SHADOW_MODEL={settings.shadow_model} serves {version}, the "
                                 "primary's own version: a shadow must be another version")
            return ModelRun(client, name, version, fusion=fusion)

        async def on_stop(self) -> None:
            for c in (self.client, self.shadow_client):
                if c is not None:
                    await c.close()
            if self.engine is not None:
                await self.engine.dispose()

    @app.agent(chunks, concurrency=1)
    async def process_chunks(stream: Any) -> None:
        await ready.wait()
        h = runtime["handler"]
        manual = stream.noack()
        watchdog = asyncio.create_task(watch_loop_lag(owned))
        lag = asyncio.create_task(watch_lag(app, settings.chunks_topic, gate, acked_next, metrics))

        try:
            await consume(manual.events(), h, FaustPartitions(app), manual.ack, owned, gate, acked_next,
                          concurrency=settings.worker_concurrency, session_timeout_s=SESSION_TIMEOUT_S)
        finally:
            watchdog.cancel()
            lag.cancel()

    agent: Any = process_chunks  # Faust's AgentT does not declare the error hook it calls
    faust_on_error = agent._on_error

    async def on_error(agent: Any, exc: BaseException) -> None:
        # Nothing should get here (the handler settles every message); if something does, a worker
        # that no longer consumes must not look alive: say so loudly and exit non-zero for a restart.
        if faust_on_error is not None:
            await faust_on_error(agent, exc)
        log.error("the chunks agent stopped consuming (%r); stopping the worker for a restart", exc)
        EXIT_CODE["code"] = 1
        os.kill(os.getpid(), signal.SIGTERM)

    agent._on_error = on_error
    return app
