"""The chunk message contract: what any recorder, with any Kafka client, publishes (README §Chunk messages).

Kept free of I/O so the producer, the worker and the tests share one definition, and so that every way
a message can be malformed maps to one stable reason code that lands in the DLQ header and the ledger.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping

from pipeline.errors import BadChunk

SCHEMA_VERSION = "1"
SUPPORTED_SCHEMAS = {SCHEMA_VERSION}
LAYOUTS = ("dual", "agent", "customer")
CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")

H_SCHEMA = "callstream-schema"
H_CALL_ID = "call-id"
H_SEQ = "seq"
H_START_MS = "start-ms"
H_DURATION_MS = "duration-ms"
H_END_OF_CALL = "end-of-call"
H_LAYOUT = "layout"
H_CONTENT_TYPE = "content-type"
H_CLAIM_CHECK = "claim-check"
H_CALL_STARTED_AT = "call-started-at"
H_PUBLISHED_AT_MS = "published-at-ms"
# Set by the worker on dead-lettered messages.
H_DLQ_REASON = "dlq-reason"
H_DLQ_DETAIL = "dlq-detail"


@dataclass(frozen=True)
class ChunkMeta:
    call_id: str
    seq: int
    start_ms: int
    end_of_call: bool = False
    layout: str | None = None
    duration_ms: int | None = None
    content_type: str | None = None
    claim_check: str | None = None
    call_started_at: datetime | None = None
    published_at_ms: int | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        pairs = [(H_SCHEMA, SCHEMA_VERSION), (H_CALL_ID, self.call_id), (H_SEQ, str(self.seq)),
                 (H_START_MS, str(self.start_ms)), (H_END_OF_CALL, "true" if self.end_of_call else "false")]
        optional = [(H_LAYOUT, self.layout), (H_DURATION_MS, self.duration_ms),
                    (H_CONTENT_TYPE, self.content_type), (H_CLAIM_CHECK, self.claim_check),
                    (H_CALL_STARTED_AT, self.call_started_at.isoformat() if self.call_started_at else None),
                    (H_PUBLISHED_AT_MS, self.published_at_ms)]
        pairs += [(k, str(v)) for k, v in optional if v is not None]
        return [(k, v.encode()) for k, v in pairs]


def header_map(headers: Iterable[tuple[str, bytes | str | None]] | Mapping | None) -> dict[str, str]:
    """Normalise Kafka headers (list of pairs or a mapping, bytes or str) into lower-case str keys."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for key, value in items:
        k = key.decode() if isinstance(key, bytes) else str(key)
        if value is None:
            v = ""
        elif isinstance(value, bytes):
            try:
                v = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadChunk("malformed_header", f"{k} is not UTF-8") from exc
        else:
            v = str(value)
        out[k.lower()] = v
    return out


def _int(h: dict[str, str], name: str, required: bool) -> int | None:
    raw = h.get(name)
    if raw is None or raw == "":
        if required:
            raise BadChunk("missing_header", f"header {name!r} is required")
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadChunk("malformed_header", f"{name}={raw!r} is not an integer") from None
    if value < 0:
        raise BadChunk("malformed_header", f"{name}={value} is negative")
    return value


def _bool(h: dict[str, str], name: str) -> bool:
    raw = h.get(name, "false").strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no", ""):
        return False
    raise BadChunk("malformed_header", f"{name}={raw!r} is not a boolean")


def parse(headers, key: bytes | str | None) -> ChunkMeta:
    h = header_map(headers)
    schema = h.get(H_SCHEMA)
    if schema is None:
        raise BadChunk("missing_header", f"header {H_SCHEMA!r} is required")
    if schema not in SUPPORTED_SCHEMAS:
        raise BadChunk("unknown_schema", f"schema version {schema!r}; supported: {sorted(SUPPORTED_SCHEMAS)}")
    call_id = h.get(H_CALL_ID)
    if not call_id:
        raise BadChunk("missing_header", f"header {H_CALL_ID!r} is required")
    if not CALL_ID.match(call_id):
        raise BadChunk("malformed_header", f"call-id {call_id[:64]!r} must match {CALL_ID.pattern}")
    if key is not None:
        k = key.decode(errors="replace") if isinstance(key, bytes) else key
        if k != call_id:
            raise BadChunk("malformed_header", f"message key {k[:64]!r} differs from call-id {call_id!r}")
    layout = h.get(H_LAYOUT) or None
    if layout is not None and layout not in LAYOUTS:
        raise BadChunk("malformed_header", f"layout {layout!r}; expected one of {LAYOUTS}")
    claim = h.get(H_CLAIM_CHECK) or None
    if claim is not None and not re.match(r"^s3://[^/]+/.+", claim):
        raise BadChunk("malformed_header", f"claim-check {claim[:100]!r} is not s3://bucket/key")
    started = h.get(H_CALL_STARTED_AT) or None
    try:
        started_at = datetime.fromisoformat(started) if started else None
    except ValueError:
        raise BadChunk("malformed_header", f"call-started-at {started!r} is not ISO 8601") from None
    return ChunkMeta(
        call_id=call_id, seq=_int(h, H_SEQ, True), start_ms=_int(h, H_START_MS, True),
        end_of_call=_bool(h, H_END_OF_CALL), layout=layout, duration_ms=_int(h, H_DURATION_MS, False),
        content_type=h.get(H_CONTENT_TYPE) or None, claim_check=claim, call_started_at=started_at,
        published_at_ms=_int(h, H_PUBLISHED_AT_MS, False))


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key
