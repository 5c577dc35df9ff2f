"""Chunk files a killed worker left in scratch storage are removed by the next worker's start: only our
naming, only when the writing process is gone, never while a live process holds the file."""

import os
import subprocess
import sys

from pipeline.media.chunkfile import CHUNK_PREFIX, ChunkFile, remove_stale_chunk_files


def test_only_files_of_dead_writers_that_nobody_holds_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    stale = tmp_path / f"{CHUNK_PREFIX}{dead}-abc123"
    mine = tmp_path / f"{CHUNK_PREFIX}{os.getpid()}-def456"
    held = tmp_path / f"{CHUNK_PREFIX}{dead}-held99"
    other = tmp_path / "callstream-chunk-notours"      # the old, unattributed naming: left alone
    foreign = tmp_path / f"someone-else-{dead}-x"
    for p in (stale, mine, held, other, foreign):
        p.write_bytes(b"customer media")
    # A live process (ffmpeg, say) still reading a dead worker's file keeps it.
    reader = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'rb'); print('open', "
                               "flush=True); time.sleep(30)", str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "open"
        assert remove_stale_chunk_files(tmp_path) == [stale]
    finally:
        reader.kill()
        reader.wait()
    assert not stale.exists() and mine.exists() and held.exists() and other.exists() and foreign.exists()


def test_chunk_files_carry_their_writers_pid(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.media.chunkfile.scratch_dir", lambda: str(tmp_path))
    with ChunkFile(b"x") as path:
        assert path.name.startswith(f"{CHUNK_PREFIX}{os.getpid()}-") and path.parent == tmp_path
        assert remove_stale_chunk_files(tmp_path) == []   # our own, live
    assert not path.exists()


def test_triton_regions_nobody_maps_are_removed_and_a_live_servers_stay(tmp_path):
    """A killed tritonserver leaves its stubs' shared-memory regions; a live server (this stack's or a
    second stack's on the same host) maps its own, even with the descriptor closed."""
    from callstream_lab.stack.triton import SHM_PREFIX, remove_orphan_regions

    orphan, mapped = tmp_path / f"{SHM_PREFIX}orphan", tmp_path / f"{SHM_PREFIX}live"
    unrelated = tmp_path / "PostgreSQL.1234"
    for p in (orphan, mapped, unrelated):
        p.write_bytes(b"\0" * 4096)
    holder = subprocess.Popen([sys.executable, "-c", "import mmap, sys, time\nwith open(sys.argv[1], 'r+b') as f:\n"
                               "    m = mmap.mmap(f.fileno(), 0)\nprint('mapped', flush=True); time.sleep(30)",
                               str(mapped)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "mapped"
        assert remove_orphan_regions(tmp_path) == [orphan]
    finally:
        holder.kill()
        holder.wait()
    assert not orphan.exists() and mapped.exists() and unrelated.exists()
