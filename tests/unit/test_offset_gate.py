"""The commit rule: a partition's offsets are acknowledged only in order, each after its end commits."""

from pipeline.settings import Settings
from pipeline.worker.app import create_app
from pipeline.worker.consume import OffsetGate


def test_a_fast_later_message_waits_for_the_slow_earlier_one():
    gate = OffsetGate()
    for off in (10, 11, 12):
        gate.begin("p0", off)
    assert gate.finish("p0", 11, "m11") == []          # 10 still running: nothing may be acknowledged
    assert gate.finish("p0", 12, "m12") == []
    assert gate.finish("p0", 10, "m10") == ["m10", "m11", "m12"]
    assert gate.pending() == 0


def test_partitions_are_independent():
    gate = OffsetGate()
    gate.begin("p0", 5)
    gate.begin("p1", 7)
    assert gate.finish("p1", 7, "b") == ["b"]
    assert gate.pending() == 1
    assert gate.finish("p0", 5, "a") == ["a"]


def test_redelivered_lower_offsets_after_a_rebalance_hold_the_higher_ones():
    gate = OffsetGate()
    gate.begin("p0", 20)
    gate.begin("p0", 15)                               # the partition came back from an older commit
    assert gate.finish("p0", 20, "m20") == []
    assert gate.finish("p0", 15, "m15") == ["m15", "m20"]


def test_the_worker_keeps_faust_state_under_the_state_dir(tmp_path):
    """Faust makes an `<app id>-data` folder even with the memory store; not in the start directory."""
    app = create_app(Settings.from_env({"CALLSTREAM_STATE_DIR": str(tmp_path), "CALLSTREAM_APP_ID": "cs-x"}))
    assert app.conf.datadir == tmp_path / "faust" / "cs-x-data"
