"""The benchmark publishes calls as produce does, and a live call longer than its recording goes on
with the next seqs and call time instead of repeating them (which the worker would take as redelivery)."""

from pathlib import Path

from callstream_lab.bench.workload import Template, Workload
from pipeline.ingest.producer import Upload


def _template() -> Template:
    ups = [Upload(Path(f"c{i}.mkv"), i, i * 5000, (i + 1) * 5000, i == 2, layout="customer", delete_after=False)
           for i in range(3)]
    return Template("t", ups, [b"x%d" % i for i in range(3)], 15.0)


def test_a_call_is_published_in_call_time_order_with_its_end_marked():
    metas = _template().metas("call-1")
    assert [(m.seq, m.start_ms, m.duration_ms, m.end_of_call, m.layout) for m, _, _ in metas] == [
        (0, 0, 5000, False, "customer"), (1, 5000, 5000, False, "customer"), (2, 10000, 5000, True, "customer")]
    assert [p for _, p, _ in metas] == [b"x0", b"x1", b"x2"]
    assert [at for _, _, at in metas] == [5.0, 10.0, 15.0]


def test_a_looped_call_goes_on_with_new_seqs_and_call_time():
    tpl = _template()
    first, second = tpl.metas("c", 0, last=False), tpl.metas("c", 1, last=True)
    assert [m.seq for m, _, _ in first + second] == [0, 1, 2, 3, 4, 5]
    assert [m.start_ms for m, _, _ in second] == [15000, 20000, 25000]
    assert [m.end_of_call for m, _, _ in first + second] == [False] * 5 + [True]
    assert [at for _, _, at in second] == [20.0, 25.0, 30.0]


def test_a_run_cycles_through_the_calls():
    a, b = _template(), Template("b", [], [], 45.0)
    work = Workload("w", [a, b], 5.0)
    assert [work.call(i).name for i in range(5)] == ["t", "b", "t", "b", "t"]
    assert work.mean_call_seconds == 30.0
