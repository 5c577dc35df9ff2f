"""Acoustic arousal per segment: energy, pitch variability and speaking rate, combined by a fixed rule.

This is *not* speech emotion recognition. No credible pretrained speech-emotion model ships its weights
inside a registry package reachable here (see docs/MODEL_CARD.md), so the voice contributes what the
literature supports from prosody alone: vocal arousal rises with intensity, F0 variability and
articulation rate (Scherer 2003; Juslin & Laukka 2003). Reference points are typical conversational
speech; each cue becomes a z-like score, and a logistic maps their weighted sum to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.shared.wire import SAMPLE_RATE

FRAME = 640        # 40 ms analysis frames
HOP = 320          # 20 ms hop
F0_MIN, F0_MAX = 60.0, 400.0
VOICING_THRESHOLD = 0.5

# (reference, spread) per cue: conversational speech at about -26 dBFS, 2.5 semitones F0 s.d.,
# 4 syllables per second.
ENERGY_REF, ENERGY_SPREAD = -26.0, 8.0
PITCH_VAR_REF, PITCH_VAR_SPREAD = 2.5, 1.5
RATE_REF, RATE_SPREAD = 4.0, 1.5
WEIGHTS = (0.5, 0.3, 0.2)  # energy is the most robust arousal cue, rate the noisiest estimate


@dataclass(frozen=True)
class Prosody:
    rms_dbfs: float
    f0_mean_hz: float       # NaN when nothing is voiced
    f0_std_semitones: float
    syllables_per_s: float
    arousal: float          # 0 (calm) .. 1 (highly activated)

    def cues(self) -> tuple[float, float, float]:
        return cue_scores(self.rms_dbfs, self.f0_std_semitones, self.syllables_per_s)


def _frames(x: np.ndarray) -> np.ndarray:
    if len(x) < FRAME:
        x = np.pad(x, (0, FRAME - len(x)))
    n = 1 + (len(x) - FRAME) // HOP
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(n)[:, None]
    return x[idx]


def frame_f0(frames: np.ndarray) -> np.ndarray:
    """Autocorrelation pitch per frame (Hz), NaN where unvoiced."""
    x = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(x, n=2 * FRAME, axis=1)
    ac = np.fft.irfft(spec * np.conj(spec), axis=1)[:, :FRAME]
    lo, hi = int(SAMPLE_RATE / F0_MAX), int(SAMPLE_RATE / F0_MIN)
    energy = ac[:, 0] + 1e-12
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(len(ac)), lag] / energy
    f0 = SAMPLE_RATE / lag.astype(np.float64)
    f0[(strength < VOICING_THRESHOLD) | (energy < 1e-6)] = np.nan
    return f0


def syllable_rate(frames: np.ndarray, seconds: float) -> float:
    """Syllable nuclei as peaks of the smoothed energy envelope that rise 3 dB above their dips."""
    env = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)
    if len(env) < 3:
        return 0.0
    env = np.convolve(env, np.ones(3) / 3, mode="same")
    floor = max(env.max() - 25.0, -60.0)
    peaks = 0
    last_dip = env[0]
    for i in range(1, len(env) - 1):
        last_dip = min(last_dip, env[i])
        if env[i] >= env[i - 1] and env[i] > env[i + 1] and env[i] > floor and env[i] - last_dip >= 3.0:
            peaks += 1
            last_dip = env[i]
    return peaks / max(seconds, 1e-3)


def pitch_spread(voiced_hz: np.ndarray) -> float:
    """F0 variability in semitones, robust to the autocorrelation tracker's octave errors: deviations
    are folded into +-6 semitones of the median and spread is the MAD scaled to a standard deviation.
    A plain s.d. let one halved or doubled frame (common on G.711 telephone audio and after lossy
    codecs) swing a segment's arousal by 0.3."""
    if len(voiced_hz) < 3:
        return 0.0
    semis = 12 * np.log2(voiced_hz / np.median(voiced_hz))
    semis = (semis + 6.0) % 12.0 - 6.0
    return float(1.4826 * np.median(np.abs(semis - np.median(semis))))


def cue_scores(rms_dbfs: float, f0_std_semitones: float, syllables_per_s: float) -> tuple[float, float, float]:
    """Energy, pitch variability and speaking rate as z-scores against conversational speech, in
    -3..3: the evidence a row shows for its arousal."""
    z = ((rms_dbfs - ENERGY_REF) / ENERGY_SPREAD,
         (f0_std_semitones - PITCH_VAR_REF) / PITCH_VAR_SPREAD,
         (syllables_per_s - RATE_REF) / RATE_SPREAD)
    energy, pitch, rate = (float(np.clip(np.nan_to_num(v), -3, 3)) for v in z)
    return energy, pitch, rate


def arousal_score(rms_dbfs: float, f0_std_semitones: float, syllables_per_s: float) -> float:
    z = cue_scores(rms_dbfs, f0_std_semitones, syllables_per_s)
    s = sum(w * v for w, v in zip(WEIGHTS, z, strict=True))
    return float(1.0 / (1.0 + np.exp(-2.0 * s)))


def prosody(samples: np.ndarray) -> Prosody:
    x = np.asarray(samples, dtype=np.float64)
    seconds = len(x) / SAMPLE_RATE
    frames = _frames(x)
    rms = float(10 * np.log10(np.mean(x ** 2) + 1e-10)) if len(x) else -100.0
    f0 = frame_f0(frames)
    voiced = f0[~np.isnan(f0)]
    f0_mean = float(np.mean(voiced)) if len(voiced) else float("nan")
    f0_std = pitch_spread(voiced)
    rate = syllable_rate(frames, seconds)
    return Prosody(rms, f0_mean, f0_std, rate, arousal_score(rms, f0_std, rate))
