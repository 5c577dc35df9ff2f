"""The Faust app: one agent on the chunks topic, a dead-letter topic, nothing else.

Several agent instances (concurrency) keep chunks in flight so ffmpeg, Triton and Postgres overlap;
Faust commits an offset only once every earlier message of the partition has been acknowledged, and
a message is acknowledged only after its rows are committed.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from pipeline.inference.client import EmotionClient
from pipeline.ingest.claimcheck import ClaimCheckStore
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings
from pipeline.store.db import async_engine
from pipeline.store.writer import SegmentWriter
from pipeline.worker.handler import MessageHandler
from pipeline.worker.process import ChunkProcessor

log = logging.getLogger("callstream.worker")


def create_app(settings: Settings) -> faust.App:
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
    )
    chunks = app.topic(settings.chunks_topic, key_type=bytes, value_type=bytes,
                       partitions=settings.partitions)
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes)
    state: dict = {}
    ready = asyncio.Lock()

    async def dead_letter(key, value, headers) -> None:
        fut = await dlq.send(key=key, value=value, headers=headers)
        await fut

    async def handler() -> MessageHandler:
        # Clients bind to the running event loop, so they are built inside it, once.
        async with ready:
            if "handler" not in state:
                client = EmotionClient(settings.triton_grpc_url, settings.triton_model, settings.triton_batch_items)
                await client.wait_ready(timeout=600)
                name, version = await client.identity()
                claims = ClaimCheckStore(settings)
                processor = ChunkProcessor(settings, client, claims, ffmpeg_exe(settings.ffmpeg_binary), name, version)
                writer = SegmentWriter(async_engine(settings, pool_size=settings.worker_concurrency))
                state["handler"] = MessageHandler(processor, writer, dead_letter,
                                                  settings.retry_initial_s, settings.retry_max_s)
                log.info("worker ready: model %s (%s) at %s", name, version, settings.triton_grpc_url)
        return state["handler"]

    @app.agent(chunks, concurrency=settings.worker_concurrency)
    async def process_chunks(stream):
        h = await handler()
        async for event in stream.events():
            m = event.message
            await h.handle(m.topic, m.partition, m.offset, m.key, m.value, m.headers)

    return app
