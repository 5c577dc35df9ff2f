"""Cutting a recording leaves only its chunks behind (produce deletes those as it publishes), and a
file that is not media leaves nothing."""

import tempfile

import pytest

from pipeline.media.cut import NotMedia, cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import REPO_ROOT


def test_a_file_that_is_not_media_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(NotMedia):
        cut(ffmpeg_exe(), REPO_ROOT / "README.md", 5.0)
    assert list(tmp_path.iterdir()) == []


def test_only_the_chunks_are_left(tmp_path, monkeypatch):
    import subprocess

    src = tmp_path / "src.mkv"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=s=160x120:r=10:d=6", "-c:v", "libx264", "-g", "10", str(src)], check=True)
    out = tmp_path / "cuts"
    out.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(out))
    chunks = cut(ffmpeg_exe(), src, 2.0)
    (folder,) = out.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == sorted(c.path.name for c in chunks)
