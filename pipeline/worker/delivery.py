"""A message's life as the worker sees it: the Delivery the consumer loop hands the handler (the
record, the Lease it is worked on under, and what made it unreadable, if anything) and the Outcome
the handler returns. Granted in one place (worker/consume.py), checked before every write."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeline.media.runclock import CLOCK, Mark, RunningClock


@asynccontextmanager
async def _in_place() -> AsyncIterator[None]:
    yield


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Lease:
    """What the consumer grants one delivery. `held()`: this worker still owns the message's partition
    (as assigned when the message was received). `step_aside()`: a context for waiting on a dependency,
    during which the consumer may give the message's slot to others and stop fetching its partition.
    A pause of the process longer than `pause_limit_s` (the group session) since the grant ends it too:
    the group has given the partition to another worker by then, whether or not the revocation is known."""
    held: Callable[[], bool] = field(default=_always)
    step_aside: Callable[[], AbstractAsyncContextManager[None]] = field(default=_in_place)
    clock: RunningClock = CLOCK
    pause_limit_s: float = math.inf
    granted: Mark = field(default_factory=CLOCK.mark)

    @classmethod
    def grant(cls, held: Callable[[], bool] = _always,
              step_aside: Callable[[], AbstractAsyncContextManager[None]] = _in_place, *,
              clock: RunningClock = CLOCK, pause_limit_s: float = math.inf) -> Lease:
        return cls(held, step_aside, clock, pause_limit_s, clock.mark())

    def lost(self) -> str | None:
        """Why this worker may no longer write for the message; None while the lease holds."""
        if not self.held():
            return "its partition was revoked from this worker"
        if (paused := self.clock.paused_since(self.granted)) > self.pause_limit_s:
            return f"this worker was paused for {paused:.0f}s, longer than its group session"
        return None


@dataclass(frozen=True)
class Delivery:
    """One message from its fetch to its end, with the lease it is worked on under: granted by the
    consumer loop (worker/consume.py), checked before every write the handler makes."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any
    timestamp: float | None = None   # the record's Kafka timestamp (s): when the broker got it, for any client
    lease: Lease = field(default_factory=Lease)
    unreadable: str | None = None    # why the consumer could not read the record at this offset

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class Outcome(StrEnum):
    """A delivery's end as the handler returns it."""
    DONE = "done"          # its rows (or its note) are committed
    FAILED = "failed"      # dead-lettered with a `failed` ledger row
    REFUSED = "refused"    # not analysed, by rule (its call was erased)
    REVOKED = "revoked"    # the lease ended first: nothing was written, the partition's next owner processes it
