from pathlib import Path

import pytest

from callstream_lab.synth import generate_call
from pipeline.media.ffmpeg_bin import ffmpeg_exe


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Generated recordings shared by the end-to-end tests."""
    d = tmp_path_factory.mktemp("media")
    ff = ffmpeg_exe()
    return {
        "call20": generate_call(ff, d / "call20.mp4", seconds=20),
        "call10": generate_call(ff, d / "call10.mp4", seconds=10, away_customer=None),
        "audio_only": generate_call(ff, d / "audio_only.mp4", seconds=3, video=False),
        "video_only": generate_call(ff, d / "video_only.mp4", seconds=3, audio=False),
    }
