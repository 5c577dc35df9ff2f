"""Decoded media stays at its own time: what a segment analyses is what was recorded in it."""

import subprocess

import numpy as np

from pipeline.media.decode import decode
from pipeline.media.ffmpeg_bin import ffmpeg_exe


def test_a_gap_inside_an_audio_track_stays_a_gap(tmp_path):
    """A muted stretch inside one track file (Twilio leaves gaps in the timestamps): the audio after it
    must stay at its own time, not slide into the gap."""
    path = tmp_path / "gap.mka"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "sine=frequency=300:duration=6:sample_rate=48000",
                    "-af", "asetpts='if(gte(T,3),PTS+3/TB,PTS)'", "-c:a", "libopus", str(path)], check=True)
    audio = decode(ffmpeg_exe(), path, 2.0, 320).audio[0]
    assert abs(len(audio) / 16000 - 9.0) < 0.05
    rms = [float(np.sqrt(np.mean(audio[i * 16000:(i + 1) * 16000] ** 2))) for i in range(9)]
    # The tone (rms 0.088) before and after, silence in the gap (the codec rings a little into its start).
    assert all(r > 0.05 for r in rms[:3] + rms[6:]) and rms[3] < 0.03 and max(rms[4:6]) < 0.005, rms
