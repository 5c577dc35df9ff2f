"""Erasure and retention over both stores: the database (rows, ledger, tombstones) and the object
store (claim-check media, parked dead-letter payloads). `callstream forget` and `callstream retention
apply` only parse and print; this decides what is deleted, in which order, and reports what really was.

Order matters for erasure: the ledger rows name the objects, so the objects they name are collected in
the same transaction that deletes the rows (store/erasure.py), then deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pipeline.ingest.claimcheck import DEAD_LETTER_PREFIX, ClaimCheckStore, call_prefix, dead_letter_key
from pipeline.settings import Settings
from pipeline.store import erasure


@dataclass
class ForgetReport:
    segments: int = 0
    ledger_rows: int = 0
    calls: int = 0
    objects: int = 0
    remaining: dict[str, int] = field(default_factory=dict)   # rows still there (should be none)
    errors: list[str] = field(default_factory=list)           # objects that could not be deleted


@dataclass
class RetentionReport:
    done_media_deleted: int | None = None       # None: CALLSTREAM_DELETE_CLAIM_CHECKS is off, kept
    done_media_gone: int = 0                    # references cleared whose object was gone already
    dead_letter_objects: int = 0
    parked_payloads: int = 0
    aged: dict[str, int] | None = None          # None: CALLSTREAM_RETENTION_DAYS is 0, rows kept
    errors: list[str] = field(default_factory=list)


class Privacy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Any:
        from pipeline.store.db import sync_engine

        return sync_engine(self.settings)

    @cached_property
    def claims(self) -> ClaimCheckStore:
        return ClaimCheckStore(self.settings)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()

    def forget(self, call_id: str, participant: str | None = None) -> ForgetReport:
        """Delete the call's (or one participant's) rows and stored objects; leave a tombstone."""
        gone = erasure.forget(self.engine, call_id, participant)
        out = ForgetReport(gone.segments, gone.ledger_rows, gone.calls)
        if participant:   # a participant's media is inside the call's chunks: nothing of its own to delete
            return out
        prefix = f"s3://{self.settings.claim_check_bucket}/{call_prefix(call_id)}"
        out.objects += self.claims.delete_prefix(call_prefix(call_id))
        for uri in (u for u in gone.claim_checks if not u.startswith(prefix)):  # those are gone already
            try:
                self.claims.delete(uri)
                out.objects += 1
            except Exception as exc:  # another bucket or already gone: say so, keep going
                out.errors.append(f"could not delete {uri}: {exc}")
        for source in gone.dead_letter_sources:
            out.objects += self.claims.delete_prefix(dead_letter_key(source))
        out.remaining = {k: v for k, v in erasure.remaining(self.engine, call_id).items() if v}
        return out

    def known(self, call_id: str) -> bool:
        return erasure.known(self.engine, call_id)

    def lift(self, call_id: str, participant: str | None = None) -> bool:
        return erasure.lift(self.engine, call_id, participant) > 0

    def apply_retention(self) -> RetentionReport:
        s, out = self.settings, RetentionReport()
        if s.delete_claim_checks:
            # Media of done chunks is not needed once their rows are committed: whatever a failed delete left.
            cleared, removed = [], 0
            for ledger_id, uri in erasure.done_media(self.engine):
                try:
                    removed += self.claims.remove(uri)
                    cleared.append(ledger_id)
                except Exception as exc:
                    out.errors.append(f"could not delete {uri}: {exc}")
            if cleared:
                erasure.mark_media_deleted(self.engine, cleared)
            out.done_media_deleted, out.done_media_gone = removed, len(cleared) - removed
        deleted = []
        for ledger_id, uri in erasure.stale_dead_letter_media(self.engine, s.dlq_media_hours):
            try:
                self.claims.delete(uri)
                deleted.append(ledger_id)
            except Exception as exc:
                out.errors.append(f"could not delete {uri}: {exc}")
        if deleted:
            erasure.mark_media_deleted(self.engine, deleted)
        out.dead_letter_objects = len(deleted)
        out.parked_payloads = self.claims.delete_prefix(DEAD_LETTER_PREFIX,
                                                        older_than=time.time() - s.dlq_media_hours * 3600)
        if s.retention_days > 0:
            out.aged = erasure.apply_retention(self.engine, s.retention_days)
        return out
