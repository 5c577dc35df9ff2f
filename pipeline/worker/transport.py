"""The Kafka transport the worker's Faust app uses: Faust's aiokafka driver, reading `read_committed`.

Faust reads `read_uncommitted` unless the app itself runs exactly-once transactions, so a recorder's
aborted transaction would be analysed. The chunks are read committed-only: an aborted chunk never has
rows, and a transactional chunk is read once its transaction commits. (The only way in is the client
Faust builds; the isolation level is set on it before it starts, when its fetcher is made from it.)
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TransportT

ISOLATION = "read_committed"


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = ISOLATION
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(driver.Transport):
    Consumer = _Consumer


class WorkerApp(faust.App):
    def _new_transport(self) -> TransportT:
        return ReadCommittedTransport(self.conf.broker_consumer, self)
