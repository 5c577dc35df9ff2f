"""Which ffmpeg to run: the configured one, else the static build shipped in imageio-ffmpeg."""

from __future__ import annotations

import functools
import shutil


@functools.cache
def ffmpeg_exe(configured: str = "") -> str:
    if configured:
        found = shutil.which(configured)
        if not found:
            raise FileNotFoundError(f"CALLSTREAM_FFMPEG={configured!r} is not an executable")
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()
