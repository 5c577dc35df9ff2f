"""Real synthesized speech (eSpeak NG, shipped in the espeakng-loader wheel) for generated test calls.

Generated calls must carry speech that a real VAD accepts; tones and formant toys do not pass Silero.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

_lock = threading.Lock()
_lib = None
_rate = 22050
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_chunks: list[np.ndarray] = []


@_CALLBACK
def _collect(wav: Any, numsamples: int, _events: Any) -> int:
    if numsamples > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    return 0


def _library() -> Any:
    global _lib, _rate
    if _lib is None:
        import espeakng_loader

        lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        # AUDIO_OUTPUT_SYNCHRONOUS = 2: samples come back through the callback, no sound device.
        rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise")
        lib.espeak_SetSynthCallback(_collect)
        _lib, _rate = lib, rate
    return _lib


def synthesize(text: str, voice: str = "en-us", pitch: int = 50, rate_wpm: int = 160) -> tuple[np.ndarray, int]:
    """Return (float32 mono samples in [-1, 1], sample rate)."""
    with _lock:
        lib = _library()
        lib.espeak_SetVoiceByName(voice.encode())
        lib.espeak_SetParameter(1, rate_wpm, 0)  # espeakRATE
        lib.espeak_SetParameter(3, pitch, 0)     # espeakPITCH
        _chunks.clear()
        data = text.encode("utf-8")
        # espeakCHARS_UTF8 = 1, POS_CHARACTER = 1
        lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)
        lib.espeak_Synchronize()
        samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
    return samples.astype(np.float32) / 32768.0, _rate
