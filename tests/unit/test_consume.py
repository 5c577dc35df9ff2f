"""The ordered-commit loop against a fake consumer that behaves like Faust over aiokafka: it fetches a
batch (the position moves past it), hands the records over one by one, drops those of a partition
paused meanwhile, keeps handing over records it read ahead even after a seek, and skips the offsets
Kafka leaves empty. Every offset must be handled exactly once and the commit must reach the end."""

import asyncio
import random

import pytest

from pipeline.worker.consume import Partitions, UnreadableBatch, consume
from tests.unit.fakes import TP, Event, FakeHandler, FakeKafka, Msg


async def run_until(kafka: FakeKafka, handler: FakeHandler, done, *, concurrency=2, release_after=0.05, within_s=10.0):
    book = Partitions()
    fetcher = asyncio.create_task(kafka.fetch())
    loop = asyncio.create_task(consume(kafka.events(), handler, kafka, book, concurrency=concurrency,
                                       session_timeout_s=6.0, commit_every_s=0.01))
    await asyncio.sleep(release_after)
    handler.dependency.set()
    try:
        async with asyncio.timeout(within_s):
            while not done():
                handler.changed.clear()
                await handler.changed.wait()
    except TimeoutError:
        pass   # every_offset_once says what is missing
    await asyncio.sleep(0.05)   # a last commit round
    fetcher.cancel()
    await kafka.queue.put(None)
    await asyncio.wait_for(loop, 5)
    return book


def every_offset_once(kafka: FakeKafka, handler: FakeHandler) -> None:
    expected = sorted((tp.partition, o) for tp, offs in kafka.logs.items() for o in offs)
    assert sorted(handler.settled) == expected, (sorted(set(expected) - set(handler.settled)), kafka.dropped)
    for tp, offs in kafka.logs.items():
        assert kafka.committed_at.get(tp) == offs[-1] + 1
        committed = [c[tp] for c in kafka.commits if tp in c]
        assert committed == sorted(committed)   # never moves back


def test_records_dropped_while_a_partition_waits_are_read_again_not_committed_over():
    """The outage pattern: offset 1 waits on a dependency, the partition is paused while 2-5 of the same
    fetched batch are being handed over, so the consumer drops them with its position already past."""
    tp = TP("c", 0)
    kafka = FakeKafka({tp: list(range(12))}, batch=6)
    handler = FakeHandler(waits={(0, 1)})

    async def go():
        return await run_until(kafka, handler, lambda: len(handler.settled) == 12, concurrency=4)
    asyncio.run(go())
    assert kafka.dropped, "the scenario must drop records, or it tests nothing"
    every_offset_once(kafka, handler)
    # While offset 1 waited, nothing at or past it was committed.
    assert all(c[tp] <= 1 for c in kafka.commits[: next(i for i, c in enumerate(kafka.commits) if c[tp] > 1)])


def test_a_refused_commit_is_made_again_with_the_next_one():
    tp = TP("c", 0)
    kafka = FakeKafka({tp: list(range(6))}, batch=3, refuse_commits=3)
    handler = FakeHandler()

    async def go():
        return await run_until(kafka, handler, lambda: len(handler.settled) == 6)
    asyncio.run(go())
    every_offset_once(kafka, handler)


def test_kafkas_own_gaps_are_passed_after_one_re_read():
    """Transaction markers and aborted records leave offsets no consumer ever sees."""
    tp = TP("c", 0)
    kafka = FakeKafka({tp: [0, 1, 3, 4, 7, 8, 9, 12]}, batch=3)
    handler = FakeHandler()

    async def go():
        return await run_until(kafka, handler, lambda: len(handler.settled) == 8)
    asyncio.run(go())
    every_offset_once(kafka, handler)
    assert (0, 2) in kafka.seeks and (0, 5) in kafka.seeks


def test_a_record_the_client_loses_without_a_pause_is_read_again():
    tp = TP("c", 0)
    kafka = FakeKafka({tp: list(range(10))}, batch=5, lose_once={(0, 3)})
    handler = FakeHandler()

    async def go():
        return await run_until(kafka, handler, lambda: len(handler.settled) == 10)
    asyncio.run(go())
    every_offset_once(kafka, handler)
    assert set(kafka.seeks) == {(0, 3)}   # again for each record read ahead of the seek


def test_the_first_record_past_the_committed_offset_is_a_gap_too():
    """The group committed 4; the consumer hands over 6 first (it lost 4-5): they are read again."""
    tp = TP("c", 0)
    kafka = FakeKafka({tp: list(range(10))}, batch=5, committed_at={tp: 4}, lose_once={(0, 4), (0, 5)})
    handler = FakeHandler()

    async def go():
        return await run_until(kafka, handler, lambda: len(handler.settled) == 6)
    asyncio.run(go())
    assert sorted(handler.settled) == [(0, o) for o in range(4, 10)]
    assert kafka.committed_at[tp] == 10


@pytest.mark.parametrize("seed", range(12))
def test_random_waits_pauses_drops_and_gaps_lose_and_double_nothing(seed):
    rng = random.Random(seed)
    logs = {}
    for p in range(3):
        offs = [o for o in range(40) if rng.random() > 0.15]   # Kafka's own gaps
        logs[TP("c", p)] = offs
    waits = {(tp.partition, o) for tp, offs in logs.items() for o in offs if rng.random() < 0.1}
    lost = {(tp.partition, o) for tp, offs in logs.items() for o in offs if rng.random() < 0.05}
    kafka = FakeKafka(logs, batch=rng.randint(2, 8), lose_once=lost)
    handler = FakeHandler(waits=waits, seed=seed)
    total = sum(len(v) for v in logs.values())

    async def go():
        return await run_until(kafka, handler, lambda: len(handler.settled) >= total,
                               concurrency=rng.randint(1, 4), release_after=rng.random() * 0.1)
    asyncio.run(go())
    every_offset_once(kafka, handler)


def test_a_message_waiting_on_a_dependency_lets_other_partitions_flow():
    async def go():
        kafka = FakeKafka({TP("c", 0): [0, 1], TP("c", 1): [0, 1, 2]}, batch=4)
        handler = FakeHandler(waits={(0, 0)})
        book = Partitions()
        fetcher = asyncio.create_task(kafka.fetch())
        loop = asyncio.create_task(consume(kafka.events(), handler, kafka, book, concurrency=1,
                                           session_timeout_s=6.0, commit_every_s=0.01))
        for _ in range(50):
            await asyncio.sleep(0.01)
        flowing = sorted(handler.settled)
        paused = set(kafka.paused)
        committed_while_waiting = dict(kafka.committed_at)
        handler.dependency.set()
        for _ in range(50):
            await asyncio.sleep(0.01)
        fetcher.cancel()
        await kafka.queue.put(None)
        await asyncio.wait_for(loop, 5)
        return flowing, paused, committed_while_waiting, kafka, handler
    flowing, paused, committed_while_waiting, kafka, handler = asyncio.run(go())
    # One slot: partition 1's messages were all done while partition 0's waited, its partition paused;
    # partition 0's offset 1, handed over before the pause, may be done too, but is not committed.
    assert {(1, 0), (1, 1), (1, 2)} <= set(flowing) and (0, 0) not in flowing and paused == {TP("c", 0)}
    assert committed_while_waiting[TP("c", 1)] == 3 and committed_while_waiting.get(TP("c", 0), 0) == 0
    assert sorted(handler.settled) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert kafka.committed_at == {TP("c", 0): 2, TP("c", 1): 3}


def test_an_unreadable_placeholder_reaches_the_handler_as_such_and_a_forged_header_does_not():
    """The transport hands an offset it could not read over as a record whose checksum is an
    UnreadableBatch; a producer can only set headers and bytes, which never count."""
    async def go():
        q: asyncio.Queue = asyncio.Queue()
        kafka = FakeKafka({TP("c", 0): []})
        handler = FakeHandler()

        async def events():
            while (item := await q.get()) is not None:
                yield item
        loop = asyncio.create_task(consume(events(), handler, kafka, Partitions(), concurrency=2,
                                           session_timeout_s=6.0, commit_every_s=0.01))
        await q.put(Event(Msg("c", 0, 0, headers=[("unreadable", b"yes")], checksum=12345)))
        await q.put(Event(Msg("c", 0, 1, key=None, value=None, checksum=UnreadableBatch("Invalid CRC"))))
        await q.put(Event(Msg("c", 0, 2)))
        for _ in range(20):
            await asyncio.sleep(0.01)
        await q.put(None)
        await asyncio.wait_for(loop, 5)
        return kafka, handler
    kafka, handler = asyncio.run(go())
    assert sorted(handler.settled) == [(0, 0), (0, 1), (0, 2)] and handler.unreadable == {(0, 1): "Invalid CRC"}
    assert kafka.committed_at == {TP("c", 0): 3}


def test_a_revoked_partition_is_cancelled_never_committed_and_its_slots_come_back():
    async def go():
        q: asyncio.Queue = asyncio.Queue()
        kafka = FakeKafka({TP("c", 0): [], TP("c", 1): []})
        handler = FakeHandler(waits={(0, 0)})
        book = Partitions()

        async def events():
            while (item := await q.get()) is not None:
                yield item
        loop = asyncio.create_task(consume(events(), handler, kafka, book, concurrency=1, session_timeout_s=6.0,
                                           commit_every_s=0.01))
        await q.put(Event(Msg("c", 0, 0)))      # waits on the dependency, stepped aside
        await asyncio.sleep(0.05)
        await q.put(Event(Msg("c", 0, 1)))      # takes the slot, then is revoked before it even runs
        await asyncio.sleep(0)
        cancelled, final = book.revoke([TP("c", 0)])
        kafka.assigned.discard(TP("c", 0))
        await q.put(Event(Msg("c", 0, 2)))      # fetched before the revocation: skipped
        await q.put(Event(Msg("c", 1, 0)))      # another partition still gets a slot
        for _ in range(20):
            await asyncio.sleep(0.01)
        await q.put(None)
        await asyncio.wait_for(loop, 5)
        return cancelled, final, kafka, handler
    cancelled, final, kafka, handler = asyncio.run(go())
    assert cancelled >= 1 and handler.settled == [(1, 0)]
    assert final == {} and TP("c", 0) not in kafka.committed_at   # 0 was never settled: nothing to commit
    assert kafka.committed_at == {TP("c", 1): 1}


def test_the_worker_commits_the_chunks_topic_itself_and_keeps_faust_state_under_the_state_dir(tmp_path):
    """Faust tracks and commits nothing of the chunks topic (it would fill its own gaps over records it
    dropped); and it makes an `<app id>-data` folder even with the memory store: not in the start dir."""
    from pipeline.settings import Settings
    from pipeline.worker.app import create_app

    settings = Settings.from_env({"CALLSTREAM_STATE_DIR": str(tmp_path), "CALLSTREAM_APP_ID": "cs-x"})
    app = create_app(settings)
    assert app.conf.datadir == tmp_path / "faust" / "cs-x-data"
    (agent,) = app.agents.values()
    assert agent.channel.topics == (settings.chunks_topic,) and agent.channel.acks is False
