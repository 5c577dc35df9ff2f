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


@pytest.fixture(scope="module")
def suite(stack, media):
    s = Suite(stack.env, cut(ffmpeg_exe(), media["call20"], 5.0)[:4], log=print)
    baseline = s.run("none", 0, calls=6)
    assert not broken(baseline), baseline
    assert s.reference and all(s.reference.values())
    return s


@pytest.mark.parametrize("fault, seed", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_every_published_offset_has_exactly_one_end_after(suite, fault, seed):
    row = suite.run(fault, seed, calls=6)
    assert not broken(row), row
    assert row["published"] == 24 and row["done"] + row["failed"] == 24
