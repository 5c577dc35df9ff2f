"""The worker's side of a voice-emotion net and of a shadow model, on real decoded chunks with fake models:
windows that depend on the chunk alone, and a shadow whose failures cost only its own rows."""

import asyncio

import numpy as np
import pytest

from pipeline.contract import ChunkMeta
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings
from pipeline.worker.process import ChunkProcessor, ModelRun
from tests.unit.fakes import FakeTriton


@pytest.fixture(scope="module")
def chunk(tmp_path_factory):
    from callstream_lab.synth import generate_call

    return generate_call(ffmpeg_exe(), tmp_path_factory.mktemp("m") / "c.mp4", seconds=6).read_bytes()


# Both participants: the agent speaks in the first seconds (a test of windows, not of the policy).
BOTH = {"CALLSTREAM_ANALYSED_ROLES": "customer,agent",
        "CALLSTREAM_ALLOW_EMPLOYEE_EMOTION_RECOGNITION_PROHIBITED_IN_EU": "true"}


def _process(value, env, primary, shadow=None, errors=None):
    processor = ChunkProcessor(Settings.from_env({**BOTH, **env}), primary, None, ffmpeg_exe(), "m", "1", shadow,
                               errors.append if errors is not None else None)
    meta = ChunkMeta("c-1", 0, 0, True, duration_ms=6000)
    return asyncio.run(processor.process(meta, value))[0]


def test_voice_windows_do_not_depend_on_how_the_chunk_was_decoded(chunk):
    """Released window by window (1-s decode windows) or all at the end, each segment hears the same
    2 s: centred on it, shifted inward at the chunk's edges."""
    streamed, whole = FakeTriton(voice_window_ms=2000), FakeTriton(voice_window_ms=2000)
    _process(chunk, {"CALLSTREAM_DECODE_WINDOW_S": "1"}, streamed)
    _process(chunk, {"CALLSTREAM_DECODE_WINDOW_S": "60"}, whole)
    assert streamed.requests > 1 and whole.requests == 1   # several requests against one
    assert len(streamed.windows) == len(whole.windows) == 12    # 6 segments x 2 participants
    for a, b in zip(streamed.windows, whole.windows, strict=True):
        assert a is not None and len(a) == 32000
        np.testing.assert_array_equal(a, b)
    assert sum(bool(np.abs(w).max() > 0.05) for w in whole.windows) >= 4   # speech in them


def test_no_voice_net_no_window(chunk):
    fake = FakeTriton()
    _process(chunk, {}, fake)
    assert fake.windows and all(w is None for w in fake.windows)


class Broken(FakeTriton):
    async def infer(self, items, parallel=True):
        raise RuntimeError("shadow model exploded")


def test_a_shadow_writes_its_own_rows_and_its_failures_cost_only_those(chunk):
    shadow = FakeTriton()
    pieces = _process(chunk, {}, FakeTriton(), ModelRun(shadow, "s", "shadow/1"))
    versions = [p["model_version"] for p in pieces]
    assert versions.count("1") == versions.count("shadow/1") == 12 and shadow.items == 12
    errors: list = []
    pieces = _process(chunk, {}, FakeTriton(), ModelRun(Broken(), "s", "shadow/1"), errors)
    assert [p["model_version"] for p in pieces] == ["1"] * 12
    assert len(errors) == 1 and "exploded" in str(errors[0])
