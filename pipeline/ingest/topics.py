"""Create the chunks and dead-letter topics with the configured partition count (idempotent)."""

from __future__ import annotations

import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.ingest.security import kafka_python_kwargs
from pipeline.settings import Settings


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="callstream-admin",
                                     **kafka_python_kwargs(settings))
            break
        except KafkaError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(settings.chunks_topic, settings.partitions, 1),
                  NewTopic(settings.dlq_topic, max(1, settings.partitions // 4), 1)]
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
