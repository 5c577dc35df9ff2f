"""The two kinds of failure the worker distinguishes: the chunk's fault, or the world's.

BadChunk: retrying cannot help; the chunk goes to the dead-letter topic with `reason` and the ledger
records it as failed. TransientFault: a dependency is down; retry with backoff while the offset holds.
A fault is classified where its cause is known (the S3 status code, the Triton status, the Postgres
SQLSTATE class), never by which step happened to raise it.
"""

from __future__ import annotations

from typing import Literal, get_args

# The closed set of dead-letter reasons: the contract, the ledger, the DLQ header and the README share it.
Reason = Literal[
    "missing_header",        # a required header is absent
    "malformed_header",      # a header is present but invalid, out of range, repeated or too long
    "unknown_schema",        # callstream-schema names a version this worker does not speak
    "empty_value",           # no payload and no claim check
    "too_large",             # payload above CALLSTREAM_MAX_CHUNK_BYTES
    "claim_check_refused",   # claim check names a bucket outside the allow-list, or an unsafe key
    "claim_check_missing",   # the object does not exist or may not be read
    "claim_check_rejected",  # the object store refused the request for this object (other 4xx)
    "undecodable",           # not a container we read, or ffmpeg cannot decode it
    "truncated",             # decodes much less than the container declares
    "no_media_streams",      # neither audio nor video
    "decode_timeout",        # decoding took longer than its duration-scaled budget
    "inference_rejected",    # Triton refused this request's inputs
    "db_rejected",           # Postgres refused this chunk's rows (data, integrity, programming error)
    "retries_exhausted",     # kept failing "transiently" while the dependency answered others
    "processing_error",      # a bug: costs one chunk, never the worker
    "unreadable_batch",      # the consumer could not read the record batch holding this offset, refetched
]
REASONS: tuple[str, ...] = get_args(Reason)

# What a transient fault waits on; the handler asks that dependency whether it is up.
Dependency = Literal["triton", "postgres", "object_store", "dead_letter_topic", "unknown"]


class BadChunk(Exception):
    def __init__(self, reason: Reason, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason
        self.detail = detail


class TransientFault(Exception):
    def __init__(self, message: str, dependency: Dependency = "unknown") -> None:
        super().__init__(message)
        self.dependency: Dependency = dependency


class AlreadySettled(Exception):
    """The message's offset already has its end in the ledger (done, failed or refused): the first end
    recorded stands, so this attempt writes nothing and reads what that end was."""

    def __init__(self, status: str) -> None:
        super().__init__(f"already {status}")
        self.status = status
