"""Fencing and waiting in the per-message policy: a worker that lost its partition writes nothing, a
done chunk is never turned into a failure, and a retry comes as soon as its dependency answers."""

import asyncio
import time
from contextlib import asynccontextmanager

from pipeline.contract import ChunkMeta
from pipeline.errors import BadChunk, TransientFault
from pipeline.media.runclock import RunningClock
from pipeline.worker.delivery import Lease
from pipeline.worker.handler import WORKER_ID, MessageHandler
from tests.unit.fakes import FakeDLQ, FakeProcessor, FakeWriter, delivery

GOOD = ChunkMeta("call-1", 0, 0, duration_ms=1000).headers()
CLAIMED = ChunkMeta("call-1", 3, 0, duration_ms=1000, claim_check="s3://chunks/calls/call-1/000003.mkv").headers()


class GatedProcessor(FakeProcessor):
    """Processes once `go` is set, so a test can change the world while the chunk is in flight."""

    def __init__(self, errors=()):
        super().__init__(list(errors))
        self.go = asyncio.Event()

    async def process(self, meta, value):
        await self.go.wait()
        return await super().process(meta, value)


def handle(h, lease=None, headers=GOOD, offset=7):
    return h.handle(delivery("chunks", 0, offset, b"call-1", b"media", headers, None, lease))


def _revoked_in_flight(errors=()):
    """A chunk whose partition is revoked while it is being processed; its outcome and the fakes."""
    async def go():
        p, w, d = GatedProcessor(errors), FakeWriter(), FakeDLQ()
        owned = {"yes": True}
        task = asyncio.create_task(handle(MessageHandler(p, w, d), Lease(held=lambda: owned["yes"])))
        await asyncio.sleep(0.01)
        owned["yes"] = False
        p.go.set()
        return await task, w, d
    return asyncio.run(go())


def test_a_partition_revoked_while_its_chunk_is_in_flight_writes_nothing():
    outcome, w, d = _revoked_in_flight()
    assert outcome == "revoked" and not w.commits and not w.failures and not d.sent


def test_a_revoked_failing_chunk_is_not_dead_lettered():
    outcome, w, d = _revoked_in_flight([BadChunk("decode_timeout", "slow")])
    assert outcome == "revoked" and not d.sent and not w.failures


class Wall:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _gated_while(advance):
    """A chunk held in flight while `advance(wall, clock)` moves time; its outcome and the fakes."""
    wall = Wall()
    clock = RunningClock(monotonic=wall)

    async def go():
        p, w, d = GatedProcessor(), FakeWriter(), FakeDLQ()
        task = asyncio.create_task(handle(MessageHandler(p, w, d), Lease.grant(clock=clock, pause_limit_s=6.0)))
        await asyncio.sleep(0.01)
        advance(wall, clock)
        p.go.set()
        return await task, w, d
    return asyncio.run(go())


def test_a_pause_longer_than_the_session_fences_the_chunk_even_before_the_revocation_is_known():
    def stopped(wall, clock):
        wall.t += 30.0          # SIGSTOP for 30 s: the wall clock moved, the process did not run
    outcome, w, d = _gated_while(stopped)
    assert outcome == "revoked" and not w.commits and not d.sent


def test_work_that_runs_long_is_not_mistaken_for_a_pause():
    def running(wall, clock):
        for _ in range(300):     # 30 s of running, ticked every 0.1 s
            wall.t += 0.1
            clock.tick()
    outcome, w, _ = _gated_while(running)
    assert outcome == "done" and len(w.commits) == 1


def test_a_late_failure_never_turns_a_done_chunk_into_failed():
    """Another worker commits the chunk while this one is still decoding it, then this one fails."""
    async def go():
        p, w, d = GatedProcessor([BadChunk("decode_timeout", "reading the header took longer than 30s")]), \
            FakeWriter(), FakeDLQ()
        task = asyncio.create_task(handle(MessageHandler(p, w, d)))
        await asyncio.sleep(0.01)
        w.done[("chunks", 0, 7)] = "other-worker:1"
        p.go.set()
        return await task, w, d
    outcome, w, d = asyncio.run(go())
    assert outcome == "done" and not d.sent and not w.failures
    assert WORKER_ID in w.late_notes[0] and "decode_timeout" in w.late_notes[0]


def test_a_redelivered_offset_with_an_end_is_settled_by_that_end_without_processing():
    p, w, d = FakeProcessor(), FakeWriter(), FakeDLQ()
    w.done[("chunks", 0, 7)] = "other-worker:1"
    assert asyncio.run(handle(MessageHandler(p, w, d))) == "done"
    assert p.calls == 0 and not w.commits and not d.sent


def test_a_failed_row_whose_dead_letter_was_never_sent_is_sent_by_the_next_owner_once():
    p, w, d = FakeProcessor(), FakeWriter(), FakeDLQ()
    w.failed[("chunks", 0, 7)] = {"topic": "chunks", "partition": 0, "offset": 7, "error_reason": "undecodable",
                                  "error_detail": "moov atom not found", "worker": "gone:1"}
    assert asyncio.run(handle(MessageHandler(p, w, d))) == "failed"
    assert p.calls == 0 and not w.commits and d.reasons() == ["undecodable"]
    assert ("chunks", 0, 7) in w.dead_lettered
    assert asyncio.run(handle(MessageHandler(p, w, d))) == "failed" and len(d.sent) == 1   # again: nothing


def test_the_failed_row_is_written_before_the_dead_letter_and_a_revocation_between_sends_nothing():
    """The row first, then the fence, then the dead letter: a worker that loses the partition right
    after the row leaves the sending to the next owner (the row says it is due)."""
    owned = {"yes": True}
    w, d = FakeWriter(), FakeDLQ()

    async def revoke_after_row():
        assert not d.sent   # the dead letter is never out before its row
        owned["yes"] = False
    w.after_failure_row.append(revoke_after_row)
    h = MessageHandler(FakeProcessor([BadChunk("undecodable", "x")]), w, d)
    assert asyncio.run(handle(h, Lease(held=lambda: owned["yes"]))) == "revoked"
    assert not d.sent and ("chunks", 0, 7) in w.failed and ("chunks", 0, 7) not in w.dead_lettered
    # The next owner finds the row, sends its dead letter and marks it; the chunk is never also done.
    assert asyncio.run(handle(MessageHandler(FakeProcessor(), w, d))) == "failed"
    assert d.reasons() == ["undecodable"] and not w.commits and ("chunks", 0, 7) in w.dead_lettered


def test_a_chunk_whose_failed_row_appeared_while_it_was_processed_is_not_made_done():
    """Another worker wrote the failed row first: this worker's commit is refused, the failure stands,
    and its dead letter (not yet sent by the other) goes out once."""
    async def go():
        p, w, d = GatedProcessor(), FakeWriter(), FakeDLQ()
        task = asyncio.create_task(handle(MessageHandler(p, w, d)))
        await asyncio.sleep(0.01)
        w.failed[("chunks", 0, 7)] = {"error_reason": "retries_exhausted", "error_detail": "x"}
        p.go.set()
        return await task, w, d
    outcome, w, d = asyncio.run(go())
    assert outcome == "failed" and not w.commits and d.reasons() == ["retries_exhausted"]


def test_the_ledger_keeps_done_if_the_other_worker_commits_between_the_check_and_the_failure_row():
    """The second rule on its own: record_failure itself refuses to replace `done`."""
    w = FakeWriter()
    w.done[("chunks", 0, 7)] = "other-worker:1"
    assert asyncio.run(w.record_failure(None, {"topic": "chunks", "partition": 0, "offset": 7,
                                                "error_reason": "decode_timeout"})) is False
    assert not w.failures


def test_a_retry_comes_as_soon_as_the_dependency_answers_not_when_the_backoff_ends():
    async def go():
        p = FakeProcessor([TransientFault("triton unavailable", "triton")])
        state = {"up": False, "probes": 0, "aside": 0}

        async def triton_up():
            state["probes"] += 1
            return state["up"]

        @asynccontextmanager
        async def aside():
            state["aside"] += 1
            yield

        h = MessageHandler(p, FakeWriter(), FakeDLQ(), health={"triton": triton_up}, retry_initial_s=30.0,
                           retry_max_s=30.0, probe_s=0.05)
        task = asyncio.create_task(handle(h, Lease(step_aside=aside)))
        await asyncio.sleep(0.3)
        assert not task.done()
        state["up"] = True
        t0 = time.monotonic()
        outcome = await asyncio.wait_for(task, 5)
        return outcome, time.monotonic() - t0, state
    outcome, waited, state = asyncio.run(go())
    assert outcome == "done" and waited < 1.0 and state["aside"] == 1 and state["probes"] >= 3


def test_a_dependency_that_answers_while_the_message_fails_gets_the_full_backoff():
    """Not a restart: the probe is no shortcut for a message whose requests keep failing."""
    async def go():
        p = FakeProcessor([TransientFault("deadline exceeded", "triton")])

        async def up():
            return True

        h = MessageHandler(p, FakeWriter(), FakeDLQ(), health={"triton": up}, retry_initial_s=0.5, probe_s=0.01)
        t0 = time.monotonic()
        outcome = await handle(h)
        return outcome, time.monotonic() - t0
    outcome, took = asyncio.run(go())
    assert outcome == "done" and took >= 0.45


def test_a_claim_check_object_that_could_not_be_deleted_is_handed_on_for_a_later_delete():
    left = []

    async def store_down(uri):
        raise ConnectionError("object store unreachable")

    h = MessageHandler(FakeProcessor(), FakeWriter(), FakeDLQ(), discard_claim=store_down, leftover=left.append)
    assert asyncio.run(handle(h, headers=CLAIMED)) == "done"
    assert left == ["s3://chunks/calls/call-1/000003.mkv"]


def test_the_running_clock_counts_running_time_and_fires_deadlines_on_it():
    wall = Wall()
    clock = RunningClock(monotonic=wall, max_step_s=1.0)
    fired = []
    clock._thread = object()  # no ticker thread: the test ticks
    clock.call_after(5.0, lambda: fired.append("budget"))
    for _ in range(20):
        wall.t += 0.1
        clock.tick()
    wall.t += 60.0             # paused for a minute
    clock.tick()
    assert not fired and abs(clock.running() - 3.0) < 1e-6
    for _ in range(19):
        wall.t += 0.1
        clock.tick()
    assert not fired
    for _ in range(2):
        wall.t += 0.1
        clock.tick()
    assert fired == ["budget"]


def test_deletes_that_failed_are_tried_again_oldest_first_until_the_store_fails_again():
    from pipeline.worker.leftovers import PendingDeletes

    pending, store = PendingDeletes(limit=3), {"up": False, "deleted": []}
    for uri in ("s3://b/1", "s3://b/2", "s3://b/3", "s3://b/4"):   # the fourth is past the bound
        pending.add(uri)

    async def delete(uri):
        if not store["up"]:
            raise ConnectionError("down")
        store["deleted"].append(uri)
        if len(store["deleted"]) == 2:
            store["up"] = False

    assert asyncio.run(pending.retry(delete)) == 0 and len(pending) == 3
    store["up"] = True
    assert asyncio.run(pending.retry(delete)) == 2 and len(pending) == 1
    store["up"] = True
    assert asyncio.run(pending.retry(delete)) == 1 and len(pending) == 0
    assert store["deleted"] == ["s3://b/1", "s3://b/2", "s3://b/3"]


def test_a_lag_the_broker_offsets_cannot_give_is_unknown_not_zero():
    from pipeline.ingest.lag import PartitionLag

    assert PartitionLag(0, committed=10, end=5, start=0).lag is None          # end behind the group: unknown
    assert PartitionLag(0, committed=3, end=5, start=0).lag == 2
    assert PartitionLag(0, committed=None, end=5, start=1).lag == 4


def test_a_whole_call_chunk_without_a_layout_records_the_default_it_was_read_with():
    w = FakeWriter()
    asyncio.run(handle(MessageHandler(FakeProcessor(), w, FakeDLQ(), default_layout="dual")))
    assert w.commits[0][0]["layout"] == "dual"
    per_participant = ChunkMeta("call-1", 1, 0, duration_ms=1000, participant_id="p1", role="customer").headers()
    assert asyncio.run(handle(MessageHandler(FakeProcessor(), w, FakeDLQ(), default_layout="dual"),
                              headers=per_participant, offset=8)) == "done"
    assert w.commits[1][0]["layout"] is None


def test_a_stop_longer_than_the_session_suspends_the_partitions_and_running_long_does_not():
    """The watchdog measures a stop as a lease does (the running clock), not by the loop's lag: a
    30-s SIGSTOP suspends every partition until the next assignment; 30 s of running does not."""
    from pipeline.worker.app import watch_loop_lag
    from pipeline.worker.consume import Partitions

    async def go(advance):
        wall = Wall()
        clock = RunningClock(monotonic=wall)
        book = Partitions()
        watch = asyncio.create_task(watch_loop_lag(book, interval=0.005, clock=clock))
        await asyncio.sleep(0.02)
        advance(wall, clock)
        await asyncio.sleep(0.05)
        watch.cancel()
        return book.suspended

    def stopped(wall, clock):
        wall.t += 30.0

    def running(wall, clock):
        for _ in range(300):
            wall.t += 0.1
            clock.tick()

    assert asyncio.run(go(stopped)) is True
    assert asyncio.run(go(running)) is False
