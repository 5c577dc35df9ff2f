"""The chunk message contract: what any recorder, with any Kafka client, publishes (README §Chunk messages).

Kept free of I/O so the producer, the worker and the tests share one definition, and so that every way
a message can be malformed maps to one stable reason code that lands in the DLQ header and the ledger.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.errors import BadChunk

SCHEMA_VERSION = "1"
SUPPORTED_SCHEMAS = {SCHEMA_VERSION}
LAYOUTS = ("dual", "agent", "customer")
ROLES = ("customer", "agent", "supervisor", "other")
MEDIA = ("av", "audio", "video")   # which of a participant's tracks a chunk carries
CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
PARTICIPANT_ID = CALL_ID             # attendee id, track owner, channel name: the same safe alphabet
MAX_AUDIO_CHANNELS = 8               # channels an `audio-channels` map may name
# S3 bucket naming rules; keys: printable ASCII without backslash, no empty, '.' or '..' segments.
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>[!-~ ]{1,1024})$")

# Ranges the ledger columns and sane calls impose; a header outside them is malformed, not a crash.
MAX_SEQ = 2**31 - 1                      # chunks.seq is a Postgres integer
MAX_CALL_MS = 31 * 24 * 3600 * 1000      # no call runs for a month; start-ms beyond it is garbage
MAX_CHUNK_MS = 24 * 3600 * 1000          # duration-ms of one chunk
MAX_EPOCH_MS = 2**53                     # published-at-ms (exact in a double)
MAX_HEADERS = 64
MAX_HEADER_NAME = 128
MAX_HEADER_VALUE = 2048                  # bytes; bounds what is parsed, logged and stored

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
H_CONSENT = "consent"
H_PARTICIPANT_ID = "participant-id"
H_ROLE = "role"
H_MEDIA = "media"
H_AUDIO_CHANNEL = "audio-channel"
H_AUDIO_CHANNELS = "audio-channels"
CONSENTS = ("emotion", "none")
# Set by the worker on dead-lettered messages (besides the message's own headers, which are kept).
DLQ_PREFIX = "dlq-"
H_DLQ_REASON = "dlq-reason"         # one of errors.REASONS
H_DLQ_DETAIL = "dlq-detail"         # what went wrong, bounded
H_DLQ_SOURCE = "dlq-source"         # topic/partition/offset of the original message
H_DLQ_ATTEMPTS = "dlq-attempts"     # attempts made before it was dead-lettered
H_DLQ_PAYLOAD = "dlq-payload"       # inline | none | s3://… (parked) | omitted …


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
    consent: str | None = None   # 'emotion': the person agreed to emotion analysis; 'none': they did not
    participant_id: str | None = None   # set: the chunk carries this one participant
    role: str | None = None             # with participant_id: customer, agent, supervisor or other
    media: str = "av"                   # with participant_id: av, audio or video
    audio_channel: int | None = None    # with participant_id: which channel is theirs (default 0)
    # Multi-channel telephony: per channel (participant id, role), or None for a channel left out.
    audio_channels: tuple[tuple[str, str] | None, ...] | None = None

    @property
    def stream(self) -> str:
        """The chunk stream `seq` counts in: one per participant and media, '' for whole-call chunks.
        Per-participant recorders number each track's files on their own."""
        return f"{self.participant_id}/{self.media}" if self.participant_id else ""

    def headers(self) -> list[tuple[str, bytes]]:
        pairs = [(H_SCHEMA, SCHEMA_VERSION), (H_CALL_ID, self.call_id), (H_SEQ, str(self.seq)),
                 (H_START_MS, str(self.start_ms)), (H_END_OF_CALL, "true" if self.end_of_call else "false")]
        optional = [(H_LAYOUT, self.layout), (H_DURATION_MS, self.duration_ms),
                    (H_CONTENT_TYPE, self.content_type), (H_CLAIM_CHECK, self.claim_check),
                    (H_CALL_STARTED_AT, self.call_started_at.isoformat() if self.call_started_at else None),
                    (H_PUBLISHED_AT_MS, self.published_at_ms), (H_CONSENT, self.consent),
                    (H_PARTICIPANT_ID, self.participant_id), (H_ROLE, self.role),
                    (H_MEDIA, self.media if self.participant_id and self.media != "av" else None),
                    (H_AUDIO_CHANNEL, self.audio_channel),
                    (H_AUDIO_CHANNELS, format_channels(self.audio_channels) if self.audio_channels else None)]
        pairs += [(k, str(v)) for k, v in optional if v is not None]
        return [(k, v.encode()) for k, v in pairs]


def header_map(headers: Iterable[tuple[str | bytes, bytes | str | None]] | Mapping | None) -> dict[str, str]:
    """Normalise Kafka headers (list of pairs or a mapping, bytes or str) into lower-case str keys.

    Every header is untrusted: the count, name and value sizes are bounded before anything is decoded,
    and a repeated name (in any case) is malformed, since two readers could otherwise disagree on which
    value counts."""
    if headers is None:
        return {}
    items = list(headers.items() if isinstance(headers, Mapping) else headers)
    if len(items) > MAX_HEADERS:
        raise BadChunk("malformed_header", f"{len(items)} headers; at most {MAX_HEADERS}")
    out: dict[str, str] = {}
    for key, value in items:
        raw_key = key if isinstance(key, bytes) else str(key).encode("utf-8", "replace")
        if len(raw_key) > MAX_HEADER_NAME:
            raise BadChunk("malformed_header", f"header name of {len(raw_key)} B; at most {MAX_HEADER_NAME}")
        k = raw_key.decode("utf-8", "replace").lower()
        raw = value if isinstance(value, bytes) or value is None else str(value).encode("utf-8", "replace")
        if raw is not None and len(raw) > MAX_HEADER_VALUE:
            raise BadChunk("malformed_header", f"{bounded(k, 64)} is {len(raw)} B; at most {MAX_HEADER_VALUE}")
        try:
            v = raw.decode("utf-8") if raw is not None else ""
        except UnicodeDecodeError:
            raise BadChunk("malformed_header", f"{bounded(k, 64)} is not UTF-8") from None
        if k in out:
            raise BadChunk("malformed_header", f"header {bounded(k, 64)!r} is repeated")
        out[k] = v
    return out


def bounded(text: str, limit: int = 200) -> str:
    """A header-derived string safe to log or store: printable and at most `limit` characters."""
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(h: dict[str, str], name: str, required: bool, maximum: int) -> int | None:
    raw = h.get(name)
    if raw is None or raw == "":
        if required:
            raise BadChunk("missing_header", f"header {name!r} is required")
        return None
    if len(raw) > 20 or not raw.isascii() or not raw.isdigit():
        raise BadChunk("malformed_header", f"{name}={bounded(raw, 40)!r} is not a non-negative integer")
    value = int(raw)
    if value > maximum:
        raise BadChunk("malformed_header", f"{name}={value} is above {maximum}")
    return value


def _bool(h: dict[str, str], name: str) -> bool:
    raw = h.get(name, "false").strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no", ""):
        return False
    raise BadChunk("malformed_header", f"{name}={raw!r} is not a boolean")


def call_id_of(headers: Iterable[tuple[str | bytes, bytes | str | None]] | Mapping | None,
               key: bytes | str | None) -> str | None:
    """The call a message names, when its call-id header is valid and its key agrees, whatever else is
    wrong with it: a dead letter for a bad `start-ms` still belongs to its call (`dlq --call`)."""
    try:
        call_id = header_map(headers).get(H_CALL_ID)
    except Exception:
        return None
    if not call_id or not CALL_ID.match(call_id):
        return None
    k = key.decode(errors="replace") if isinstance(key, bytes) else key
    return call_id if k is None or k == call_id else None


def parse(headers: Iterable[tuple[str | bytes, bytes | str | None]] | Mapping | None,
          key: bytes | str | None) -> ChunkMeta:
    """Headers and key to ChunkMeta, or BadChunk naming what is wrong; never any other exception."""
    h = header_map(headers)
    schema = h.get(H_SCHEMA)
    if schema is None:
        raise BadChunk("missing_header", f"header {H_SCHEMA!r} is required")
    if schema not in SUPPORTED_SCHEMAS:
        raise BadChunk("unknown_schema",
                       f"schema version {bounded(schema, 40)!r}; supported: {sorted(SUPPORTED_SCHEMAS)}")
    call_id = h.get(H_CALL_ID)
    if not call_id:
        raise BadChunk("missing_header", f"header {H_CALL_ID!r} is required")
    if not CALL_ID.match(call_id):
        raise BadChunk("malformed_header", f"call-id {bounded(call_id, 64)!r} must match {CALL_ID.pattern}")
    if key is not None:
        k = key.decode(errors="replace") if isinstance(key, bytes) else key
        if k != call_id:
            raise BadChunk("malformed_header", f"message key {bounded(k, 64)!r} differs from call-id {call_id!r}")
    layout = h.get(H_LAYOUT) or None
    if layout is not None and layout not in LAYOUTS:
        raise BadChunk("malformed_header", f"layout {bounded(layout, 40)!r}; expected one of {LAYOUTS}")
    claim = h.get(H_CLAIM_CHECK) or None
    if claim is not None:
        check_claim_uri(claim)
    started = h.get(H_CALL_STARTED_AT) or None
    try:
        started_at = datetime.fromisoformat(started) if started else None
    except ValueError:
        raise BadChunk("malformed_header", f"call-started-at {bounded(started or '', 60)!r} is not ISO 8601") from None
    consent = h.get(H_CONSENT) or None
    if consent is not None and consent not in CONSENTS:
        raise BadChunk("malformed_header", f"consent {bounded(consent, 40)!r}; expected one of {CONSENTS}")
    seq = _int(h, H_SEQ, True, MAX_SEQ)
    start_ms = _int(h, H_START_MS, True, MAX_CALL_MS)
    assert seq is not None and start_ms is not None  # required: _int raised otherwise
    duration_ms = _int(h, H_DURATION_MS, False, MAX_CHUNK_MS)
    if duration_ms == 0:
        raise BadChunk("malformed_header", "duration-ms=0: a chunk has a length")
    who = _participants(h, layout)
    return ChunkMeta(
        call_id=call_id, seq=seq, start_ms=start_ms, end_of_call=_bool(h, H_END_OF_CALL), layout=layout,
        duration_ms=duration_ms, content_type=bounded(h[H_CONTENT_TYPE], 100) if h.get(H_CONTENT_TYPE) else None,
        claim_check=claim, call_started_at=started_at,
        published_at_ms=_int(h, H_PUBLISHED_AT_MS, False, MAX_EPOCH_MS), consent=consent, **who)


def _participants(h: dict[str, str], layout: str | None) -> dict:
    """Who the chunk carries: one participant (participant-id, role, media, audio-channel), a channel map
    (audio-channels), or neither (a v1 layout). Mixing the ways is ambiguous, so it is malformed."""
    pid, role, media = h.get(H_PARTICIPANT_ID) or None, h.get(H_ROLE) or None, h.get(H_MEDIA) or None
    channel_raw, channels_raw = h.get(H_AUDIO_CHANNEL) or None, h.get(H_AUDIO_CHANNELS) or None
    if pid is None:
        for name, value in ((H_ROLE, role), (H_MEDIA, media), (H_AUDIO_CHANNEL, channel_raw)):
            if value is not None:
                raise BadChunk("malformed_header", f"{name} is only meaningful with {H_PARTICIPANT_ID}")
        if channels_raw is None:
            return {}
        if layout is not None:
            raise BadChunk("malformed_header", f"{H_AUDIO_CHANNELS} and {H_LAYOUT} both say who is where")
        return {"audio_channels": parse_channels(channels_raw), "media": "audio"}
    if not PARTICIPANT_ID.match(pid):
        raise BadChunk("malformed_header", f"participant-id {bounded(pid, 64)!r} must match {PARTICIPANT_ID.pattern}")
    if layout is not None or channels_raw is not None:
        raise BadChunk("malformed_header", f"{H_PARTICIPANT_ID} names one participant; "
                                           f"{H_LAYOUT} and {H_AUDIO_CHANNELS} describe several")
    if role is None:
        raise BadChunk("missing_header", f"header {H_ROLE!r} is required with {H_PARTICIPANT_ID}")
    if role not in ROLES:
        raise BadChunk("malformed_header", f"role {bounded(role, 40)!r}; expected one of {ROLES}")
    media = media or "av"
    if media not in MEDIA:
        raise BadChunk("malformed_header", f"media {bounded(media, 40)!r}; expected one of {MEDIA}")
    channel = _int(h, H_AUDIO_CHANNEL, False, MAX_AUDIO_CHANNELS - 1)
    if channel is not None and media == "video":
        raise BadChunk("malformed_header", f"{H_AUDIO_CHANNEL} on a video-only chunk")
    return {"participant_id": pid, "role": role, "media": media, "audio_channel": channel}


def parse_channels(raw: str) -> tuple[tuple[str, str] | None, ...]:
    """`audio-channels`: per channel `ROLE`, `PARTICIPANT=ROLE` or `-` (left out), comma-separated, e.g.
    `customer,agent` (Genesys external/internal) or `ext-1=customer,-,agent`. A bare role is also the
    participant id, as in v1's agent and customer tracks."""
    entries = [e.strip() for e in raw.split(",")]
    if len(entries) > MAX_AUDIO_CHANNELS:
        raise BadChunk("malformed_header", f"{H_AUDIO_CHANNELS} names {len(entries)} channels; "
                                           f"at most {MAX_AUDIO_CHANNELS}")
    out: list[tuple[str, str] | None] = []
    for entry in entries:
        if entry == "-":
            out.append(None)
            continue
        pid, _, role = entry.rpartition("=")
        pid = pid or role
        if role not in ROLES:
            raise BadChunk("malformed_header", f"{H_AUDIO_CHANNELS} entry {bounded(entry, 60)!r}: role must be one "
                                               f"of {ROLES} (as ROLE, PARTICIPANT=ROLE or -)")
        if not PARTICIPANT_ID.match(pid):
            raise BadChunk("malformed_header", f"{H_AUDIO_CHANNELS} participant {bounded(pid, 64)!r} must match "
                                               f"{PARTICIPANT_ID.pattern}")
        out.append((pid, role))
    ids = [e[0] for e in out if e]
    if not ids:
        raise BadChunk("malformed_header", f"{H_AUDIO_CHANNELS} leaves every channel out")
    if len(set(ids)) != len(ids):
        raise BadChunk("malformed_header", f"{H_AUDIO_CHANNELS} names a participant twice")
    return tuple(out)


def format_channels(channels: tuple[tuple[str, str] | None, ...]) -> str:
    return ",".join("-" if c is None else (c[1] if c[0] == c[1] else f"{c[0]}={c[1]}") for c in channels)


def check_claim_uri(uri: str) -> None:
    """The claim check must be a plain s3://bucket/key: a key that climbs out of its prefix or a URI
    that smuggles another scheme, host or query is refused before any request is made."""
    m = S3_URI.match(uri)
    if not m:
        raise BadChunk("malformed_header", f"claim-check {bounded(uri, 100)!r} is not s3://bucket/key")
    segments = m.group("key").split("/")
    if any(seg in ("", ".", "..") for seg in segments) or any(c in uri for c in "\\?#%"):
        raise BadChunk("claim_check_refused", f"claim-check key {bounded(m.group('key'), 100)!r} is not a plain "
                                              "object key (empty, '.' or '..' segments, or ?#%\\ characters)")


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def dead_letter_headers(reason: str, detail: str, source: str, attempts: int) -> list[tuple[str, bytes]]:
    """The headers a dead letter carries besides the original ones (`dlq-payload` is added by who
    decides where the payload goes)."""
    return [(H_DLQ_REASON, reason.encode()), (H_DLQ_DETAIL, bounded(detail, 1000).encode()),
            (H_DLQ_SOURCE, source.encode()), (H_DLQ_ATTEMPTS, str(attempts).encode())]


def is_dead_letter_header(name: str) -> bool:
    return name.lower().startswith(DLQ_PREFIX)


@dataclass(frozen=True)
class AlertMessage:
    """A record of the alerts topic (key: the call id; value: this, as JSON): what a supervisor's
    screen or a CRM consumes. Published by the worker, read by `callstream alerts tail`."""
    alert_id: int
    call_id: str
    participant_id: str
    role: str
    rule: str
    start_ms: int
    end_ms: int
    values: dict[str, Any]
    model_version: str
    fired_at: str        # ISO 8601, UTC
    published_at: str

    def encode(self) -> bytes:
        return json.dumps({"alert_id": self.alert_id, "call_id": self.call_id, "participant_id": self.participant_id,
                           "role": self.role, "rule": self.rule,
                           "window": {"start_ms": self.start_ms, "end_ms": self.end_ms}, "values": self.values,
                           "model_version": self.model_version, "fired_at": self.fired_at,
                           "published_at": self.published_at}).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> AlertMessage:
        """Raises ValueError for anything that is not an alert record."""
        try:
            a = json.loads(raw or b"")
            return cls(int(a["alert_id"]), str(a["call_id"]), str(a["participant_id"]), str(a["role"]),
                       str(a["rule"]), int(a["window"]["start_ms"]), int(a["window"]["end_ms"]), dict(a["values"]),
                       str(a["model_version"]), str(a["fired_at"]), str(a["published_at"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not an alert record: {exc}") from exc
