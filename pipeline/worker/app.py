"""The Faust app: one agent on the chunks topic, a dead-letter topic, nothing else.

One reader takes messages in partition order and runs up to `worker_concurrency` of them at once, so
ffmpeg, Triton and Postgres overlap and one slow chunk does not hold the others up. Offsets are the
delicate part: Faust commits the highest run of acknowledged offsets it sees, so acknowledging a fast
later message while an earlier one is still running would let the commit pass the earlier one, and a
crash would lose it. The OffsetGate acknowledges a partition's messages strictly in offset order, each
only once its end (rows or dead letter) is committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import faust
import mode
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
from pipeline.worker.handler import MessageHandler
from pipeline.worker.metrics import Metrics
from pipeline.worker.process import ChunkProcessor, ModelRun

log = logging.getLogger("callstream.worker")


class OffsetGate:
    """Per partition, the offsets in flight; releases finished ones only below the lowest unfinished.

    Messages of a partition are begun in the order the single reader receives them, which is offset
    order; they may finish in any order."""

    def __init__(self) -> None:
        self._open: dict[Any, dict[int, Any]] = {}

    def begin(self, tp: Any, offset: int) -> None:
        self._open.setdefault(tp, {})[offset] = None

    def finish(self, tp: Any, offset: int, token: Any) -> list[Any]:
        """Mark `offset` finished; returns the tokens that may now be acknowledged, in offset order."""
        entries = self._open[tp]
        entries[offset] = token
        released = []
        for off in sorted(entries):
            if entries[off] is None:
                break
            released.append(entries.pop(off))
        if not entries:
            del self._open[tp]
        return released

    def pending(self) -> int:
        return sum(len(e) for e in self._open.values())

    def lowest(self, tp: Any) -> int | None:
        """The lowest offset of the partition still in flight."""
        entries = self._open.get(tp)
        return min(entries) if entries else None


LAG_INTERVAL_S = 5.0
ALERT_SWEEP_S = 5.0
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
                metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - nxt))
            for tp in shown - assigned:  # revoked: another worker reports it now
                metrics.lag.remove(tp.topic, str(tp.partition))
            shown = assigned
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. during a rebalance: the next round reports again
            log.debug("lag not measured this round: %s", exc)


EXIT_CODE = {"code": 0}
LOOP_LAG_WARN_S = 0.1


async def watch_loop_lag(interval: float = 0.05) -> None:
    """Long work must never hold the event loop (heartbeats and the other chunks run on it): say so
    when a wake-up comes more than 100 ms late, with the worst lag since the last warning."""
    loop = asyncio.get_running_loop()
    worst, last_warn = 0.0, 0.0
    while True:
        t = loop.time()
        await asyncio.sleep(interval)
        lag = loop.time() - t - interval
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
        broker_session_timeout=6.0, broker_rebalance_timeout=6.0, broker_heartbeat_interval=1.0,
        broker_commit_every=50, broker_commit_interval=1.0,
        consumer_max_fetch_size=16 * 1024 * 1024, producer_max_request_size=16 * 1024 * 1024,
        stream_buffer_maxsize=settings.worker_concurrency * 2,
        web_enabled=settings.worker_web_port > 0, web_port=settings.worker_web_port or 6066,
        store="memory://", table_cleanup_interval=3600.0,
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

    @app.service
    class WorkerRuntime(mode.Service):
        """The worker's clients, opened when the app starts and closed when it stops (Faust's service
        idiom): the Triton channel, the async engine's pool and the S3 client bind to the running loop."""

        client: EmotionClient | None = None
        shadow_client: EmotionClient | None = None
        engine: AsyncEngine | None = None

        async def on_start(self) -> None:
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

            runtime["handler"] = MessageHandler(
                processor, writer, dead_letter,
                health={"triton": client.ping, "postgres": writer.ping, "object_store": s3_up},
                park_payload=park, retry_initial_s=settings.retry_initial_s, retry_max_s=settings.retry_max_s,
                max_attempts=settings.max_attempts, dlq_inline_limit=settings.dlq_inline_limit_bytes,
                discard_claim=discard if settings.delete_claim_checks else None, metrics=metrics,
                publish_alerts=publish_alerts if rules else None)
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
        slots = asyncio.Semaphore(settings.worker_concurrency)
        gate = OffsetGate()
        running: set[asyncio.Task[None]] = set()
        manual = stream.noack()
        acked_next: dict[Any, int] = {}
        watchdog = asyncio.create_task(watch_loop_lag())
        lag = asyncio.create_task(watch_lag(app, settings.chunks_topic, gate, acked_next, metrics))

        async def run(event: Any) -> None:
            m = event.message
            try:
                await h.handle(m.topic, m.partition, m.offset, m.key, m.value, m.headers, m.timestamp)
                # The payload is no longer needed while the ack may wait for an earlier, slower message;
                # the event holds its own reference to it besides the message's.
                event.value = m.value = None
                for done in gate.finish(m.tp, m.offset, event):
                    await manual.ack(done)
                    acked_next[m.tp] = done.message.offset + 1
            finally:
                slots.release()

        try:
            async for event in manual.events():
                gate.begin(event.message.tp, event.message.offset)  # at once: receipt order is offset order
                await slots.acquire()
                task = asyncio.create_task(run(event))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            # Stopping: unfinished messages stay unacknowledged, so the next owner processes them again.
            watchdog.cancel()
            lag.cancel()
            for task in list(running):
                task.cancel()
            if running:
                await asyncio.wait(list(running), timeout=5)

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
