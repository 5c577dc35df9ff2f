"""Claim check: payloads too large for a Kafka message live in S3; the message carries the URI.

Keys are deterministic per (call, seq), so a republished chunk overwrites its own object instead of
leaving orphans, and a redelivered message always finds the same payload.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from pipeline.contract import bounded, check_claim_uri, split_s3_uri
from pipeline.errors import BadChunk, TransientFault
from pipeline.settings import Settings


def s3_client(settings: Settings) -> Any:
    """boto3 S3 client for the claim-check store (and the embedded stack's bucket setup)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=settings.s3_url, aws_access_key_id=settings.s3_access_key,
                        aws_secret_access_key=settings.s3_secret_key.get_secret_value(), region_name=settings.s3_region,
                        # Bounded waits: a store that hangs must surface as a fault, not stall a chunk.
                        config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                      connect_timeout=5, read_timeout=30,
                                      s3={"addressing_style": "path"}))


def call_prefix(call_id: str) -> str:
    """Where every claim-check object of a call lives (what `callstream forget` deletes)."""
    return f"calls/{call_id}/"


def object_key(call_id: str, seq: int, stream: str = "", suffix: str = "mkv") -> str:
    """Per-participant streams number their chunks on their own, so the stream is part of the key."""
    return f"{call_prefix(call_id)}{stream + '/' if stream else ''}{seq:06d}.{suffix}"


DEAD_LETTER_PREFIX = "dlq/"


def dead_letter_key(source: str) -> str:
    """Where a dead letter's parked payload lives; `source` is topic/partition/offset."""
    return DEAD_LETTER_PREFIX + source.replace("/", "-") + ".bin"


class ClaimCheckStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = s3_client(settings)

    def put(self, call_id: str, seq: int, payload: bytes, stream: str = "") -> str:
        bucket = self.settings.claim_check_bucket
        key = object_key(call_id, seq, stream)
        self.client.put_object(Bucket=bucket, Key=key, Body=payload)
        return f"s3://{bucket}/{key}"

    def put_dead_letter(self, source: str, payload: bytes) -> str:
        """Keep a dead letter's payload too large for the DLQ topic; `source` is topic/partition/offset."""
        bucket = self.settings.claim_check_bucket
        key = dead_letter_key(source)
        uri = f"s3://{bucket}/{key}"
        with _s3_errors(uri, "writing"):
            self.client.put_object(Bucket=bucket, Key=key, Body=payload)
        return uri

    def _allowed(self, uri: str) -> tuple[str, str]:
        """(bucket, key) of a plain claim-check URI in an allowed bucket; refused before any request.

        Confused-deputy guard: the worker's credentials may reach more than chunks; a message must not
        make it read (and analyse, and dead-letter a copy of) or delete an object it was not meant to."""
        check_claim_uri(uri)
        bucket, key = split_s3_uri(uri)
        if bucket not in self.settings.allowed_buckets:
            raise BadChunk("claim_check_refused", f"bucket {bucket!r} is not in CALLSTREAM_CLAIM_CHECK_BUCKETS "
                                                  f"({', '.join(sorted(self.settings.allowed_buckets))})")
        return bucket, key

    def get(self, uri: str, max_bytes: int) -> bytes:
        bucket, key = self._allowed(uri)
        with _s3_errors(uri, "reading"):
            head = self.client.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] > max_bytes:
                raise BadChunk("too_large", f"claim-check payload {head['ContentLength']} B > {max_bytes} B")
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            data = body.read(max_bytes + 1)  # the object may have grown since the HEAD
            if len(data) > max_bytes:
                raise BadChunk("too_large", f"claim-check payload > {max_bytes} B")
            return data

    def delete(self, uri: str) -> None:
        """Remove a chunk's payload once it is no longer needed (only in an allowed bucket)."""
        bucket, key = self._allowed(uri)
        with _s3_errors(uri, "deleting"):
            self.client.delete_object(Bucket=bucket, Key=key)

    def remove(self, uri: str) -> bool:
        """Delete the object if it is there; whether it was (a plain delete cannot tell: S3 deletes are
        idempotent), so `retention apply` counts what it really removed."""
        bucket, key = self._allowed(uri)
        with _s3_errors(uri, "deleting"):
            try:
                self.client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            self.client.delete_object(Bucket=bucket, Key=key)
        return True

    def delete_prefix(self, prefix: str, older_than: float | None = None) -> int:
        """Delete every object under `prefix` in the claim-check bucket (older than a POSIX time)."""
        bucket, n = self.settings.claim_check_bucket, 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if older_than is None or obj["LastModified"].timestamp() < older_than:
                    self.client.delete_object(Bucket=bucket, Key=obj["Key"])
                    n += 1
        return n

    def ping(self) -> bool:
        """Whether the object store serves requests now. A 4xx is a real answer about this request (a
        missing bucket, a policy without ListBucket), so the store is up; a 5xx, a throttle or silence
        is a store that is down or still starting (SeaweedFS answers 500 for seconds after a restart),
        and must not count as "answering others" when a message's retries run out."""
        try:
            self.client.head_bucket(Bucket=self.settings.claim_check_bucket)
            return True
        except ClientError as exc:
            return not isinstance(_classify(exc, self.settings.claim_check_bucket), TransientFault)
        except Exception:
            return False


@contextmanager
def _s3_errors(uri: str, doing: str) -> Iterator[None]:
    """Classify what the object store said about one request: see _classify; no answer is transient."""
    try:
        yield
    except ClientError as exc:
        raise _classify(exc, uri) from exc
    except (EndpointConnectionError, BotoCoreError) as exc:
        raise TransientFault(f"S3 unreachable {doing} {bounded(uri, 200)}: {exc}", "object_store") from exc


def _classify(exc: ClientError, uri: str) -> Exception:
    """S3 said no: a 4xx (other than 429) is about this request and will not change; 5xx, 429 and
    throttling are the store being unwell."""
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound", "403", "AccessDenied") or status in (403, 404):
        return BadChunk("claim_check_missing", f"{bounded(uri, 200)}: {code or status}")
    if 400 <= status < 500 and status != 429 and code not in ("SlowDown", "Throttling", "RequestTimeout"):
        message = str(err.get("Message", ""))[:200]
        return BadChunk("claim_check_rejected", f"{bounded(uri, 200)}: {status} {code} {message}")
    return TransientFault(f"S3 error on {bounded(uri, 200)}: {status} {code}", "object_store")
