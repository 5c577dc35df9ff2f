"""The Kafka transport the worker's Faust app uses: Faust's aiokafka driver, reading `read_committed`,
with a fetch that survives a record batch no client can read.

Isolation: Faust reads `read_uncommitted` unless the app itself runs exactly-once transactions, so a
recorder's aborted transaction would be analysed. The chunks are read committed-only: an aborted
chunk never has rows, and a transactional chunk is read once its transaction commits. (The only way
in is the client Faust builds; the isolation level is set on it before it starts, when its fetcher is
made from it.)

Unreadable batches: aiokafka unpacks fetched batches while handing them out, and an error there (a CRC
mismatch, a payload its codec cannot decompress, a record larger than the fetch size) is raised out of
the fetch for *every* partition, each time it is fetched again: Faust's fetcher crashes, the worker
exits, and its replacement meets the same batch. Here records are handed out partition by partition,
so one partition's error stays that partition's:
- the batch is fetched again every UNREADABLE_RETRY_S (a corruption on the way, or a leader that
  moved to an intact replica, reads fine the next time), while the other partitions flow;
- after UNREADABLE_TRIES the offset is judged unreadable and handed to the worker as a placeholder
  record (no key, no value, an `UnreadableBatch` where the client puts the record's checksum, which no
  producer can set): the worker gives it its one end like any bad chunk, a `failed` ledger row and a
  dead letter with reason `unreadable_batch`. The next offsets of the same batch follow at once.
Nothing is skipped silently: each offset of the batch has its row, its dead letter and its log line,
`callstream status` lists them per partition and `/metrics` counts the failed fetches per partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.consumer.fetcher import FetchResult
from aiokafka.errors import ConsumerStoppedError, RecordTooLargeError
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as driver
from faust.types import TransportT

from pipeline.worker.consume import UnreadableBatch

log = logging.getLogger("callstream.worker")

ISOLATION = "read_committed"
UNREADABLE_RETRY_S = 2.0
UNREADABLE_TRIES = 5


@dataclass
class _Trouble:
    """One partition's unreadable offset: how often it failed, and since when."""
    offset: int
    tries: int = 0
    retry_at: float = 0.0
    judged_to: int = -1     # offsets offset..judged_to were judged unreadable (placeholders handed out)


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def __post_init__(self) -> None:
        super().__post_init__()
        self._trouble: dict[Any, _Trouble] = {}

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = ISOLATION
        return consumer

    async def _fetch_records(self, consumer: Any, active_partitions: Any,
                             timeout: float | None = None,  # noqa: ASYNC109 (Faust's signature)
                             max_records: int | None = None) -> Any:
        """Faust's own fetch (aiokafka's `fetched_records`), with each partition's records taken apart."""
        if not self.consumer.flow_active:
            return {}
        fetcher = consumer._fetcher
        if consumer._closed or fetcher._closed:
            raise ConsumerStoppedError()
        with fetcher._subscriptions.fetch_context():
            return await self._drain(consumer, fetcher, active_partitions, timeout, max_records)

    async def _drain(self, consumer: Any, fetcher: Any, partitions: Any, wait_s: float | None,
                     max_records: int | None) -> dict[Any, list[Any]]:
        subscriptions = fetcher._subscriptions
        while True:
            if subscriptions.reassignment_in_progress:
                await subscriptions.wait_for_assignment()
            start = time.monotonic()
            drained: dict[Any, list[Any]] = {}
            for tp in list(fetcher._records):
                if partitions and tp not in partitions:
                    if not subscriptions.is_assigned(tp):
                        del fetcher._records[tp]
                    continue
                records = self._take(consumer, fetcher, tp, max_records)
                if records:
                    drained[tp] = records
                    if max_records is not None:
                        max_records -= len(records)
                        if max_records <= 0:
                            break
            if drained or not wait_s:
                return drained
            waiter = fetcher._create_fetch_waiter()
            done, pending = await asyncio.wait([waiter], timeout=min(wait_s, UNREADABLE_RETRY_S))
            if not done or fetcher._closed:
                for fut in pending:
                    fut.cancel()
                return {}
            waiter.result()   # raises the fetch routine's own errors (authorization), as aiokafka does
            wait_s = max(0.0, wait_s - (time.monotonic() - start))

    def _take(self, consumer: Any, fetcher: Any, tp: Any, max_records: int | None) -> list[Any]:
        result = fetcher._records[tp]
        trouble = self._trouble.get(tp)
        if isinstance(result, _Waiting):
            # Waiting to fetch an unreadable batch again: while this stands in its result slot, aiokafka
            # does not fetch the partition (and fetches the others); once due, it goes.
            if trouble is None or time.monotonic() >= trouble.retry_at:
                self._drop(fetcher, tp)
            return []
        if type(result) is not FetchResult:   # an error aiokafka recorded for the partition
            self._drop(fetcher, tp)
            try:
                result.check_raise()
            except RecordTooLargeError as exc:
                # aiokafka has moved past the record already: the offset is in the error.
                offset = exc.args[2] if len(exc.args) > 2 and isinstance(exc.args[2], int) else None
                if offset is None:
                    raise
                return self._unreadable(consumer, fetcher, tp, offset, exc)
            return []
        records: list[Any] = []
        try:
            while max_records is None or len(records) < max_records:
                record = result.getone()   # moves the position record by record
                if record is None:
                    break
                records.append(record)
        except Exception as exc:   # unpacking the next batch failed: the position is at its first offset
            self._drop(fetcher, tp)
            if records:
                return records     # the next fetch starts at the batch that failed, and fails alone
            return self._unreadable(consumer, fetcher, tp, result._assignment.state_value(tp).position, exc)
        if not result.has_more():
            self._drop(fetcher, tp)
        if records and trouble is not None and records[-1].offset > max(trouble.offset, trouble.judged_to):
            if trouble.judged_to < trouble.offset:
                log.info("%s/%d: offset %d read on try %d", tp.topic, tp.partition, trouble.offset, trouble.tries + 1)
            del self._trouble[tp]
        return records

    @staticmethod
    def _drop(fetcher: Any, tp: Any) -> None:
        fetcher._records.pop(tp, None)
        fetcher._notify(fetcher._wait_consume_future)

    def _unreadable(self, consumer: Any, fetcher: Any, tp: Any, offset: int, exc: BaseException) -> list[Any]:
        what = f"{type(exc).__name__}: {exc}"[:300]
        counter = getattr(self.consumer.app, "unreadable_fetches", None)
        if counter is not None:
            counter.labels(tp.topic, str(tp.partition)).inc()
        trouble = self._trouble.get(tp)
        if trouble is not None and trouble.offset <= offset <= trouble.judged_to + 1 and trouble.judged_to >= 0:
            trouble.judged_to = max(trouble.judged_to, offset)   # the rest of a batch judged unreadable
        else:
            if trouble is None or trouble.offset != offset:
                trouble = self._trouble[tp] = _Trouble(offset)
            trouble.tries += 1
            if trouble.tries < UNREADABLE_TRIES:
                log.warning("%s/%d offset %d: a record batch that cannot be read (%s); fetching it again in %.0f s "
                            "(try %d of %d), the other partitions flow", tp.topic, tp.partition, offset, what,
                            UNREADABLE_RETRY_S, trouble.tries, UNREADABLE_TRIES)
                trouble.retry_at = time.monotonic() + UNREADABLE_RETRY_S
                consumer.seek(tp, offset)
                # Kept in place until the retry is due, so aiokafka does not fetch the partition again.
                fetcher._records[tp] = _Waiting()
                return []
            trouble.judged_to = offset
        log.error("%s/%d offset %d: unreadable after %d tries (%s): dead-lettered as unreadable_batch, and the "
                  "partition goes on from offset %d", tp.topic, tp.partition, offset, trouble.tries, what, offset + 1)
        consumer.seek(tp, offset + 1)
        return [ConsumerRecord(topic=tp.topic, partition=tp.partition, offset=offset, timestamp=None,
                               timestamp_type=0, key=None, value=None, checksum=UnreadableBatch(what),
                               serialized_key_size=-1, serialized_value_size=-1, headers=())]


class _Waiting:
    """Stands in aiokafka's result slot while an unreadable batch waits to be fetched again."""

    def calculate_backoff(self) -> float:
        return 0.0   # never holds back the fetches of the broker's other partitions


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(driver.Transport):
    Consumer = _Consumer


class WorkerApp(faust.App):
    unreadable_fetches: Any = None   # a Prometheus counter by topic and partition, set by create_app

    def _new_transport(self) -> TransportT:
        return ReadCommittedTransport(self.conf.broker_consumer, self)
