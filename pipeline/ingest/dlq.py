"""The dead-letter topic as an operator uses it: list what is there, and replay it once fixed.

Replaying re-publishes the original key, value and headers to the chunks topic (a payload parked in the
object store goes back as a claim check). Rows are upserted, so a replay never duplicates rows; a chunk
dead-lettered twice (a worker stopped between the DLQ send and marking its ledger row, whose offset the
next owner dead-letters again) is replayed once, by its source.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.contract import (
    H_CALL_ID,
    H_CLAIM_CHECK,
    H_DLQ_DETAIL,
    H_DLQ_PAYLOAD,
    H_DLQ_REASON,
    H_DLQ_SOURCE,
    H_SEQ,
    is_dead_letter_header,
)
from pipeline.ingest.topics import read_from_start
from pipeline.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode(errors="replace")
        return None

    @property
    def reason(self) -> str:
        return self.header(H_DLQ_REASON) or "?"

    @property
    def source(self) -> str:
        return self.header(H_DLQ_SOURCE) or f"dlq/{self.partition}/{self.offset}"

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not is_dead_letter_header(k)]


def read_all(settings: Settings, topic: str | None = None, idle_s: float = 3.0) -> list[DeadLetter]:
    """Every dead letter on the topic, from its beginning."""
    return [DeadLetter(m.partition, m.offset, m.key, m.value, list(m.headers or []))
            for m in read_from_start(settings, topic or settings.dlq_topic, idle_s=idle_s, timeout=600)]


def select(letters: list[DeadLetter], reason: str | None = None, call_id: str | None = None) -> list[DeadLetter]:
    """Matching letters, one per source message (the latest), in source order."""
    latest: dict[str, DeadLetter] = {}
    for d in letters:
        if reason and d.reason != reason:
            continue
        if call_id and d.header(H_CALL_ID) != call_id:
            continue
        latest[d.source] = d
    return list(latest.values())


def replay(settings: Settings, letters: list[DeadLetter]) -> int:
    from pipeline.ingest.producer import ChunkPublisher

    with ChunkPublisher(settings) as pub:
        for d in letters:
            headers, value = d.original_headers(), d.value
            parked = d.header(H_DLQ_PAYLOAD) or ""
            if parked.startswith("s3://") and not value:
                headers = [(k, v) for k, v in headers if k != H_CLAIM_CHECK] + [(H_CLAIM_CHECK, parked.encode())]
            pub.publish_raw(value, d.key, headers)
        pub.wait()
    return len(letters)


def describe(d: DeadLetter) -> str:
    return (f"{d.source:<40} {d.reason:<22} call={d.header(H_CALL_ID) or '-'} seq={d.header(H_SEQ) or '-'}  "
            f"{(d.header(H_DLQ_DETAIL) or '')[:100]}")
