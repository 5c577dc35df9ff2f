"""Claim-check objects whose delete failed (the object store was down when their chunk committed).

Media is transient: the worker tries each again on a timer once the store answers. The set is bounded:
past LIMIT, and after a crash, `callstream retention apply` finds them in the ledger (done chunks
that still name an object) and deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("callstream.worker")

LIMIT = 10_000


class PendingDeletes:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._uris: dict[str, None] = {}   # insertion-ordered: the oldest are tried first

    def __len__(self) -> int:
        return len(self._uris)

    def add(self, uri: str) -> None:
        if len(self._uris) < self.limit:
            self._uris[uri] = None

    async def retry(self, delete: Callable[[str], Awaitable[None]]) -> int:
        """Delete what is pending, oldest first; stop at the first failure (the store is down again).
        Returns how many were deleted."""
        deleted = 0
        for uri in list(self._uris):
            try:
                await delete(uri)
            except Exception as exc:
                log.debug("claim-check object %s still not deleted: %s", uri, exc)
                break
            self._uris.pop(uri, None)
            deleted += 1
        return deleted
