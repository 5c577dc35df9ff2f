"""Restarting Triton through the stack commands leaves no backend stub of an earlier server running."""

import shutil
import subprocess
import time

from callstream_lab.stack.triton import _stub_path, kill_orphan_stubs


def _fake_stub(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("sleep"), path)
    return subprocess.Popen([str(path), "60"])


def test_only_this_stacks_stubs_are_killed(tmp_path):
    ours = _fake_stub(_stub_path(tmp_path / "ours"))
    theirs = _fake_stub(_stub_path(tmp_path / "theirs"))
    try:
        assert kill_orphan_stubs(tmp_path / "ours") == [ours.pid]
        assert ours.wait(timeout=5) != 0
        time.sleep(0.2)
        assert theirs.poll() is None
    finally:
        theirs.kill()
        ours.kill()
