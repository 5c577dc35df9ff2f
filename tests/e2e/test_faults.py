"""The fault suite's CI subset (the whole table: `callstream reliability --parts faults`): two workers,
a fault at a seeded point of progress, then every offset the broker acknowledged is checked from
outside: one end each (rows, or a dead letter with its `failed` row, never both), the group's commit at
the end of every partition, rows equal to the fault-free run's, no stalled partition."""

import pytest

from callstream_lab.bench.faults import Suite, broken
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe

pytestmark = pytest.mark.stack

CASES = [("Triton", 0), ("Postgres", 1), ("worker SIGKILL", 2), ("worker SIGKILL while waiting on Triton", 3)]


KAFKA_CASES = [("worker SIGKILL", 4), ("broker", 5)]


def _suite(stack, media):
    s = Suite(stack.env, cut(ffmpeg_exe(), media["call20"], 5.0)[:4], log=print)
    baseline = s.run("none", 0, calls=6)
    assert not broken(baseline), baseline
    assert s.reference and all(s.reference.values())
    return s


@pytest.fixture(scope="module")
def suite(stack, media):
    return _suite(stack, media)


@pytest.fixture(scope="module")
def kafka_suite(kafka_stack, media):
    return _suite(kafka_stack, media)


def _judge(row):
    assert not broken(row), row
    assert row["published"] == 24 and row["done"] + row["failed"] == 24


@pytest.mark.parametrize("fault, seed", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_every_published_offset_has_exactly_one_end_after(suite, fault, seed):
    _judge(suite.run(fault, seed, calls=6))


@pytest.mark.parametrize("fault, seed", KAFKA_CASES, ids=[f"{f}-{s}" for f, s in KAFKA_CASES])
def test_on_apache_kafka_every_published_offset_has_exactly_one_end_after(kafka_suite, fault, seed):
    _judge(kafka_suite.run(fault, seed, calls=6))
