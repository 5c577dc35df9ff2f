"""Talk time of an agent without emotion recognition: with CALLSTREAM_SPEECH_ACTIVITY_ROLES=agent the agent's
channel goes to the `speech` model alone; the customer is analysed as always. A stereo call whose talk is
known (eSpeak NG sentences at set times, the two talking over each other once) gives the known seconds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from callstream_lab.speech import synthesize
from callstream_lab.synth import write_wav
from pipeline.ingest.producer import publish_recording
from pipeline.settings import Settings
from tests.e2e.helpers import query, wait_chunks

pytestmark = pytest.mark.stack

RATE = 16_000
AGENT = [(0.5, "Good morning, you are speaking with the billing team."),
         (9.0, "Let me check the invoice for the last three months.")]
CUSTOMER = [(5.0, "I was charged twice for my subscription."),
            (9.5, "And nobody answered my emails about it.")]


def _channel(lines: list[tuple[float, str]], seconds: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    audio, spans = np.zeros(int(seconds * RATE), np.float32), []
    for start, text in lines:
        x, sr = synthesize(text)
        x = resample_poly(x, RATE, sr).astype(np.float32)
        voiced = np.flatnonzero(np.abs(x) > 0.01)
        x = x[voiced[0]:voiced[-1] + 1] / max(float(np.abs(x).max()), 1e-6) * 0.3
        a = int(start * RATE)
        audio[a:a + len(x)] = x
        spans.append((start, start + len(x) / RATE))
    return audio, spans


def _covered(spans: list[tuple[float, float]], others: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in spans for c, d in others)


def test_an_agents_talk_is_measured_without_emotion_rows_and_overlap_is_seen_from_both_sides(stack, tmp_path):
    env, _ = stack.isolated("talk")
    env.update({"CALLSTREAM_SPEECH_ACTIVITY_ROLES": "agent", "CALLSTREAM_CHUNK_SECONDS": "5"})
    settings = Settings.from_env(env)
    agent, agent_spans = _channel(AGENT, 15.0)
    customer, customer_spans = _channel(CUSTOMER, 15.0)
    wav = tmp_path / "stereo.wav"
    write_wav(wav, np.stack([agent, customer]), RATE)      # dual layout: agent left, customer right
    worker = stack.start_worker(env, "talk")
    try:
        sent = publish_recording(settings, wav, "e2e-talk", layout="dual", chunk_seconds=5)
        wait_chunks(settings, "e2e-talk", len(sent), timeout=240)
    finally:
        stack.stop_worker(worker)
    log = (stack.settings.state_dir / "logs" / "worker-talk.log").read_text(errors="replace")
    assert "speech activity only" in log and "monitoring of employees' work" in log, log
    # Nothing of the agent reached the emotion model; only the agent's talk was measured apart.
    tracks = query(settings, "SELECT DISTINCT track FROM emotion_segments WHERE call_id = 'e2e-talk'")
    assert [r.track for r in tracks] == ["customer"]
    measured = query(settings, "SELECT DISTINCT participant_id, role, speech_model FROM speech_activity "
                               "WHERE call_id = 'e2e-talk'")
    assert [tuple(r) for r in measured] == [("agent", "agent", "silero-vad/1")]
    talk = {r.participant_id: r for r in query(settings, "SELECT * FROM participant_talk WHERE call_id = 'e2e-talk'")}
    print({k: tuple(v) for k, v in talk.items()})
    assert talk["agent"].measured_by == "speech_activity" and talk["customer"].measured_by == "emotion"
    for who, spans in (("agent", agent_spans), ("customer", customer_spans)):
        said = sum(b - a for a, b in spans)
        row = talk[who]
        assert abs(row.audio_seconds - 15) <= 0.1 and row.talk_seconds + row.silence_seconds == row.audio_seconds
        assert abs(float(row.talk_seconds) - said) <= 1.5, (who, said, row)
    # They talk over each other from 9.5 s for ~2-3 s: seen in the cells where both speak, from both sides.
    both = _covered(agent_spans, customer_spans)
    assert both > 1.5 and talk["agent"].overlap_seconds == talk["customer"].overlap_seconds
    assert abs(float(talk["agent"].overlap_seconds) - both) <= 1.5, (both, talk["agent"])
    assert talk["agent"].talk_share + talk["customer"].talk_share == pytest.approx(1, abs=0.002)
    # The customer's summary counts the agent talking over them, as participant_talk does.
    (summary,) = query(settings, "SELECT overlap_seconds, talk_seconds FROM participant_summary "
                                 "WHERE call_id = 'e2e-talk'")
    assert (summary.overlap_seconds, summary.talk_seconds) == (talk["customer"].overlap_seconds,
                                                               talk["customer"].talk_seconds)
    # Forgetting the agent removes the measured talk too.
    from pipeline.privacy import Privacy

    privacy = Privacy(settings)
    try:
        privacy.forget("e2e-talk", "agent")
    finally:
        privacy.close()
    assert query(settings, "SELECT count(*) FROM speech_activity WHERE call_id = 'e2e-talk'")[0][0] == 0
    assert [r.participant_id for r in query(settings, "SELECT participant_id FROM participant_talk "
                                                      "WHERE call_id = 'e2e-talk'")] == ["customer"]
