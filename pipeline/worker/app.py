"""The Faust app: one agent on the chunks topic, a dead-letter topic, nothing else.

The agent hands its stream to the ordered-commit loop (worker/consume.py), which runs up to
`worker_concurrency` messages at once, so ffmpeg, Triton and Postgres overlap and one slow chunk does
not hold the others up, and commits each partition's offsets itself, never past one nobody settled.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import faust
import mode
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from faust.types import TP

from pipeline.alerts.rules import load_rules
from pipeline.ingest.security import faust_credentials
from pipeline.media.runclock import CLOCK, RunningClock
from pipeline.settings import Settings
from pipeline.worker.consume import FINAL_COMMIT_S, CommitRefused, Partitions, commit, consume
from pipeline.worker.leftovers import PendingDeletes
from pipeline.worker.metrics import Metrics
from pipeline.worker.runtime import WorkerRuntime
from pipeline.worker.transport import WorkerApp

log = logging.getLogger("callstream.worker")


class FaustConsumer:
    """Faust's consumer as the ordered-commit loop sees it (worker/consume.py's `Consumer`).

    Pauses go to the Kafka client itself, not to Faust: Faust drops the records it already fetched for
    a partition it has paused, after its client's position moved past them, while the client keeps a
    paused partition's position where its last delivered record left it. Seeks also reset Faust's own
    last-read offset, below which it drops records as already read. Calls that touch the client run
    in the client's thread (Faust runs aiokafka in a thread of its own). Commits are the loop's: the
    chunks topic is declared without acks, so Faust tracks and commits nothing of it."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def assignment(self) -> Any:
        return self.app.consumer.assignment()

    async def _in_client(self, fn: Callable[[Any], Any]) -> Any:
        thread = self.app.consumer._thread  # type: ignore[attr-defined]
        client = thread._ensure_consumer()

        async def call() -> Any:
            result = fn(client)
            return await result if inspect.isawaitable(result) else result
        return await thread.call_thread(call)

    async def pause(self, tp: Any) -> None:
        atp = TopicPartition(tp.topic, tp.partition)
        await self._in_client(lambda c: c.pause(atp) if atp in c.assignment() else None)

    async def resume(self, tp: Any) -> None:
        atp = TopicPartition(tp.topic, tp.partition)
        await self._in_client(lambda c: c.resume(atp) if atp in c.assignment() else None)

    async def seek(self, tp: Any, offset: int) -> None:
        atp = TopicPartition(tp.topic, tp.partition)
        await self._in_client(lambda c: c.seek(atp, offset) if atp in c.assignment() else None)
        self.app.consumer._read_offset[TP(tp.topic, tp.partition)] = offset or None  # type: ignore[attr-defined]

    async def start(self, tp: Any) -> int:
        atp = TopicPartition(tp.topic, tp.partition)
        offset = await self._in_client(lambda c: c.committed(atp))
        if offset is not None and offset >= 0:
            return int(offset)
        # No commit yet: the group reads from the log's start (auto_offset_reset earliest).
        starts = await self._in_client(lambda c: c.beginning_offsets([atp]))
        return int(starts[atp])

    async def commit(self, offsets: Mapping[Any, int]) -> None:
        meta = {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(off, "") for tp, off in offsets.items()}

        async def do(c: Any) -> None:
            mine = {tp: o for tp, o in meta.items() if tp in c.assignment()}
            if mine:
                await c.commit(mine)
        try:
            await self._in_client(do)
        except CommitFailedError as exc:
            raise CommitRefused(str(exc)) from exc


LAG_INTERVAL_S = 5.0
ALERT_SWEEP_S = 5.0
CLAIM_SWEEP_S = 10.0
SESSION_TIMEOUT_S = 6.0   # the consumer's group session: a worker silent this long loses its partitions


async def watch_lag(app: faust.App, topic: str, book: Partitions, metrics: Metrics) -> None:
    """Consumer lag per assigned partition: the high watermark of the last fetch minus the next offset
    not yet settled (else the fetch position)."""
    shown: set[Any] = set()
    while True:
        await asyncio.sleep(LAG_INTERVAL_S)
        try:
            assigned = {tp for tp in app.consumer.assignment() if tp.topic == topic}
            for tp in assigned:
                high = app.consumer.highwater(tp)
                nxt = book.next_unsettled(tp)
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


LOOP_LAG_WARN_S = 0.1


async def watch_loop_lag(owned: Partitions, interval: float = 0.05, clock: RunningClock = CLOCK) -> None:
    """Long work must never hold the event loop (heartbeats and the other chunks run on it): say so
    when a wake-up comes more than 100 ms late, with the worst lag since the last warning. A stop of
    the process longer than the group session means it has lost its partitions: suspend all work until
    the group assigns partitions again. The stop is measured as a delivery's lease measures it (the
    running clock's `paused_since`, worker/delivery.py): one detector, not the loop's lag."""
    loop = asyncio.get_running_loop()
    worst, last_warn = 0.0, 0.0
    clock.start()
    mark = clock.mark()
    while True:
        t = loop.time()
        await asyncio.sleep(interval)
        lag = loop.time() - t - interval
        stopped, mark = clock.paused_since(mark), clock.mark()
        if stopped > SESSION_TIMEOUT_S and not owned.suspended:
            owned.suspended = True
            log.warning("this worker was stopped for %.0f s, longer than its group session: its partitions are "
                        "presumed lost, nothing in flight is written until the group assigns them again", stopped)
        worst = max(worst, lag)
        if lag > LOOP_LAG_WARN_S and loop.time() - last_warn > 10:
            log.warning("event loop blocked for %.0f ms (worst since last warning %.0f ms)", lag * 1000, worst * 1000)
            worst, last_warn = 0.0, loop.time()


def create_app(settings: Settings) -> faust.App:
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
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
    # No acks: the ordered-commit loop commits this topic's offsets itself (worker/consume.py).
    chunks = app.topic(settings.chunks_topic, key_type=bytes, value_type=bytes,
                       partitions=settings.partitions, acks=False)
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes)
    alerts = app.topic(settings.alerts_topic, key_type=bytes, value_type=bytes)
    rules = load_rules(settings.alert_rules)  # validated before anything starts: a bad file stops the worker
    metrics = Metrics()
    app.unreadable_fetches = metrics.unreadable_fetches   # counted in the consumer's fetch (worker/transport.py)
    book = Partitions()
    consumer = FaustConsumer(app)
    leftovers = PendingDeletes()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Work on a partition this worker no longer owns must never write: cancel it. (Faust sends the
        revoked set as the signal's one argument.)"""
        revoked = args[0] if args else kwargs.get("revoked", ())
        tps = [tp for tp in revoked if tp.topic == settings.chunks_topic]
        cancelled, final = book.revoke(tps)
        await commit(consumer, book, final, within_s=FINAL_COMMIT_S)
        if cancelled:
            log.warning("partitions %s revoked: %d chunk(s) in flight cancelled; their new owner processes "
                        "them", sorted(tp.partition for tp in tps), cancelled)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """The group has said what is ours again (Faust seeks each partition to its committed offset)."""
        if book.suspended:
            log.info("partitions assigned again after the stop: resuming work")
        book.suspended = False

    async def dead_letter(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        fut = await dlq.send(key=key, value=value, headers=headers)
        await fut

    async def send_alert(key: bytes, value: bytes) -> None:
        await (await alerts.send(key=key, value=value))

    async def publish_alerts(call_id: str | None = None) -> None:
        writer = runtime.writer
        if writer is None:
            return
        for rule in await writer.publish_pending(send_alert, call_id):
            metrics.alerts.labels(rule).inc()
            log.info("alert %s published for call %s", rule, call_id or "(sweep)")

    # The worker's clients and handler: started with the app (a child service), before the agent consumes.
    runtime = WorkerRuntime(settings, metrics, rules, dead_letter, publish_alerts, leftovers.add)
    app.add_dependency(runtime)

    @app.timer(interval=ALERT_SWEEP_S)
    async def sweep_alerts() -> None:
        """Alerts whose publication failed after their commit (broker down, worker stopped) go out here."""
        if rules and runtime.ready.is_set():
            try:
                await publish_alerts()
            except Exception as exc:
                log.warning("alert sweep: %s", exc)

    @app.timer(interval=CLAIM_SWEEP_S)
    async def sweep_claims() -> None:
        """Claim-check objects whose delete failed are deleted once the object store is back."""
        discard = runtime.discard
        if discard is not None and len(leftovers):
            n = await leftovers.retry(discard)
            if n:
                log.info("deleted %d claim-check object(s) left over from an object-store outage", n)

    # A dead agent crashes the app, and the worker exits non-zero for its supervisor to restart it:
    # nothing should get there (the handler settles every message), but a worker that no longer
    # consumes must not look alive.
    @app.agent(chunks, concurrency=1, supervisor_strategy=mode.CrashingSupervisor)
    async def process_chunks(stream: Any) -> None:
        await runtime.ready.wait()
        h = runtime.handler
        assert h is not None
        manual = stream.noack()
        watchdog = asyncio.create_task(watch_loop_lag(book))
        lag = asyncio.create_task(watch_lag(app, settings.chunks_topic, book, metrics))

        try:
            await consume(manual.events(), h, consumer, book, concurrency=settings.worker_concurrency,
                          session_timeout_s=SESSION_TIMEOUT_S)
        finally:
            watchdog.cancel()
            lag.cancel()

    return app
