"""What the dead-letter topic is sent, and which of the broker's refusals are final: helpers of the
handler's one decision (worker/handler.py)."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

import aiokafka.errors as aiokafka_errors
import kafka.errors as kafka_errors

from pipeline.contract import bounded, is_dead_letter_header

Headers = list[tuple[str, bytes]]


class DeadLetterRejected(Exception):
    """The dead-letter topic refused this record itself (too large, invalid): send a smaller one."""


def raw_headers(headers: Any) -> Headers:
    """The message's own headers as sent (even malformed ones), for the dead letter; ours removed."""
    out: Headers = []
    try:
        items = headers.items() if isinstance(headers, Mapping) else list(headers or [])
        for k, v in items:
            name = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
            if not is_dead_letter_header(name):
                out.append((name, v if isinstance(v, bytes) else str(v if v is not None else "").encode()))
    except Exception:  # headers that cannot even be iterated are dropped, not fatal
        return []
    return out


# Records the broker will never accept, whatever the retry: by the clients' own types (aiokafka for
# the worker's producer, kafka-python for the CLI's), not by class names.
NEVER_ACCEPTED: tuple[type[BaseException], ...] = (
    aiokafka_errors.MessageSizeTooLargeError, aiokafka_errors.RecordTooLargeError,
    aiokafka_errors.CorruptRecordException, aiokafka_errors.RecordListTooLargeError,
    aiokafka_errors.UnsupportedForMessageFormatError, kafka_errors.MessageSizeTooLargeError,
    kafka_errors.InvalidRecordError, kafka_errors.CorruptRecordError, kafka_errors.RecordListTooLargeError,
    kafka_errors.UnsupportedForMessageFormatError)


def permanent_kafka_error(exc: BaseException) -> bool:
    """Kafka errors are marked retriable or not; a record too large or invalid will never be accepted."""
    if isinstance(exc, NEVER_ACCEPTED):
        return True
    return isinstance(exc, aiokafka_errors.KafkaError | kafka_errors.KafkaError) and not exc.retriable \
        and getattr(exc, "errno", None) not in (None, -1)


def describe(exc: BaseException) -> str:
    return bounded("".join(traceback.format_exception_only(exc)).strip(), 500)
