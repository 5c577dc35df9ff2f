"""Claim check: payloads too large for a Kafka message live in S3; the message carries the URI.

Keys are deterministic per (call, seq), so a republished chunk overwrites its own object instead of
leaving orphans, and a redelivered message always finds the same payload.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from pipeline.contract import split_s3_uri
from pipeline.errors import BadChunk, TransientFault
from pipeline.settings import Settings
from pipeline.stack.objectstore import s3_client


def object_key(call_id: str, seq: int, suffix: str = "mkv") -> str:
    return f"calls/{call_id}/{seq:06d}.{suffix}"


class ClaimCheckStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = s3_client(settings)

    def put(self, call_id: str, seq: int, payload: bytes) -> str:
        bucket = self.settings.claim_check_bucket
        key = object_key(call_id, seq)
        self.client.put_object(Bucket=bucket, Key=key, Body=payload)
        return f"s3://{bucket}/{key}"

    def get(self, uri: str, max_bytes: int) -> bytes:
        bucket, key = split_s3_uri(uri)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] > max_bytes:
                raise BadChunk("too_large", f"claim-check payload {head['ContentLength']} B > {max_bytes} B")
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound", "403", "AccessDenied"):
                raise BadChunk("claim_check_missing", f"{uri}: {code}") from None
            raise TransientFault(f"S3 error reading {uri}: {exc}") from exc
        except (EndpointConnectionError, BotoCoreError) as exc:
            raise TransientFault(f"S3 unreachable reading {uri}: {exc}") from exc
