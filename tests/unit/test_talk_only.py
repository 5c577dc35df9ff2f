"""Roles measured, not analysed (CALLSTREAM_SPEECH_ACTIVITY_ROLES): their audio goes to the speech model and
nowhere else, on a real decoded dual-layout chunk; without the setting their chunks are not even fetched."""

import asyncio

import pytest

from pipeline.contract import ChunkMeta
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings, SettingsError
from pipeline.worker.process import ChunkProcessor
from tests.unit.fakes import FakeSpeech, FakeTriton


@pytest.fixture(scope="module")
def chunk(tmp_path_factory):
    from callstream_lab.synth import generate_call

    return generate_call(ffmpeg_exe(), tmp_path_factory.mktemp("t") / "c.mp4", seconds=6).read_bytes()


def _processor(env, triton, speech):
    return ChunkProcessor(Settings.from_env(env), triton, None, ffmpeg_exe(), "m", "1", speech=speech)


def test_the_agent_is_measured_by_the_speech_model_alone_and_the_customer_analysed_as_before(chunk):
    triton, speech = FakeTriton(), FakeSpeech()
    processor = _processor({"CALLSTREAM_SPEECH_ACTIVITY_ROLES": "agent"}, triton, speech)
    pieces, t = asyncio.run(processor.process(ChunkMeta("c-1", 0, 0, True, duration_ms=6000), chunk))
    assert {p["participant_id"] for p in pieces} == {"customer"} and triton.items == 6
    assert len(speech.audios) == 6 and all(len(a) == 16000 for a in speech.audios)
    assert [(r["participant_id"], r["role"], r["start_ms"], r["audio_ms"]) for r in t.talk] == \
        [("agent", "agent", ms, 1000) for ms in range(0, 6000, 1000)]
    assert all(r["speech_model"] == "fake-vad/1" and r["min_speech_ratio"] == 0.2 for r in t.talk)
    assert sum(r["speech_ms"] for r in t.talk) > 0     # the generated agent speaks in the first seconds
    # An agent-only chunk is measured, not skipped; the emotion model sees none of it.
    triton, speech = FakeTriton(), FakeSpeech()
    processor = _processor({"CALLSTREAM_SPEECH_ACTIVITY_ROLES": "agent"}, triton, speech)
    meta = ChunkMeta("c-2", 0, 0, True, duration_ms=6000, layout="agent")
    assert processor.not_analysed(meta) is None
    # An agent's video track alone has no talk to measure: not even fetched.
    video = ChunkMeta("c-2", 0, 0, True, participant_id="a1", role="agent", media="video")
    assert processor.not_analysed(video) == "not analysed: a measured role's chunk without audio has no talk"
    supervisor = ChunkMeta("c-2", 0, 0, True, participant_id="s1", role="supervisor", media="audio")
    assert processor.not_analysed(supervisor) == \
        "not analysed: supervisor not in CALLSTREAM_ANALYSED_ROLES or CALLSTREAM_SPEECH_ACTIVITY_ROLES"
    pieces, t = asyncio.run(processor.process(meta, chunk))
    assert pieces == [] and triton.items == 0 and len(t.talk) == 6


def test_without_the_setting_nobody_elses_talk_is_measured(chunk):
    triton = FakeTriton()
    processor = _processor({}, triton, None)
    meta = ChunkMeta("c-3", 0, 0, True, duration_ms=6000, layout="agent")
    assert processor.not_analysed(meta) == "not analysed: agent not in CALLSTREAM_ANALYSED_ROLES"
    pieces, t = asyncio.run(processor.process(ChunkMeta("c-4", 0, 0, True, duration_ms=6000), chunk))
    assert t.talk == [] and {p["participant_id"] for p in pieces} == {"customer"}


def test_the_setting_names_known_roles_and_analysed_roles_need_no_measuring():
    assert Settings.from_env({"CALLSTREAM_SPEECH_ACTIVITY_ROLES": "agent, supervisor"}).measured_roles == \
        {"agent", "supervisor"}
    assert Settings.from_env({"CALLSTREAM_SPEECH_ACTIVITY_ROLES": "customer"}).measured_roles == frozenset()
    assert Settings.from_env({}).measured_roles == frozenset()
    with pytest.raises(SettingsError, match="CALLSTREAM_SPEECH_ACTIVITY_ROLES.*agnet"):
        Settings.from_env({"CALLSTREAM_SPEECH_ACTIVITY_ROLES": "agnet"})
