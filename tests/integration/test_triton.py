"""Triton loads every model of triton_models/ and serves them through the one `emotion` call."""

import asyncio
import json
import urllib.request

import numpy as np
import pytest

from pipeline.model.repository import served
from pipeline.shared.fusion import fuse_evidence
from pipeline.shared.labels import DFEW_LABELS
from pipeline.worker.triton_client import EmotionClient, Item
from tests.model_kit import astronaut_view

pytestmark = pytest.mark.stack


def _speech():
    from scipy.signal import resample_poly

    from callstream_lab.speech import synthesize

    x, sr = synthesize("Thank you for calling, how can I help you today?")
    return resample_poly(x, 320, 441).astype(np.float32)[:16000]


def test_every_model_is_ready(stack):
    url = f"http://127.0.0.1:{stack.settings.triton_http_port}/v2/repository/index"
    req = urllib.request.Request(url, data=b"{}", method="POST")
    index = json.loads(urllib.request.urlopen(req, timeout=10).read())
    ready = {m["name"] for m in index if m.get("state") == "READY"}
    # The built-in weights' folders (face_detector, face_expression, voice) are not models: emotion loads them.
    assert ready == set(served(stack.settings.model_repository)) == {"emotion", "speech", "words"}


def test_the_words_model_transcribes_through_the_workers_client_and_refuses_what_it_cannot_take(stack):
    from pipeline.errors import BadChunk
    from pipeline.worker.words_client import WordsClient

    async def run():
        client = WordsClient(stack.settings.triton_grpc_url)
        try:
            await client.wait_ready(60)
            version = await client.identity()
            heard = await client.transcribe([_speech(), np.zeros(16000, np.float32), np.zeros(0, np.float32)])
            with pytest.raises(BadChunk, match="at most"):
                await client.transcribe([np.zeros(16000 * 121, np.float32)])
            return version, heard
        finally:
            await client.close()

    version, (speech, silence, nothing) = asyncio.run(run())
    assert version == "whisper-tiny.en+vader/1"
    assert " ".join(u.text for u in speech).lower().startswith("thank you for")   # a second of it
    assert speech[0].words[0].start_ms < 500 and speech[-1].end_ms <= 1000 and speech[0].valence > 0
    assert silence == [] and nothing == []


def test_the_speech_model_measures_talk_as_the_emotion_model_does_and_refuses_what_it_cannot_take(stack):
    """Talk time without emotion (the `speech` model, for CALLSTREAM_SPEECH_ACTIVITY_ROLES): per item only a
    share of speech, the same share the emotion model's VAD gives the same audio."""
    from pipeline.errors import BadChunk
    from pipeline.worker.speech_client import SpeechClient

    talk = _speech()
    clips = [talk, np.concatenate([np.zeros(8000, np.float32), talk[:8000]]), np.zeros(16000, np.float32),
             np.zeros(0, np.float32)] + [talk[:8000]] * 70      # past one request's 64 items

    async def run():
        client = SpeechClient(stack.settings.triton_grpc_url)
        try:
            await client.wait_ready(60)
            version = await client.identity()
            ratios = await client.ratios(clips)
            with pytest.raises(BadChunk, match="NaN"):
                await client.ratios([np.full(1600, np.nan, np.float32)])
            return version, client.min_speech_ratio, ratios
        finally:
            await client.close()

    version, threshold, ratios = asyncio.run(run())
    assert version == "silero-vad/1" and threshold == 0.2
    assert len(ratios) == len(clips) and ratios[0] > 0.6 and 0.2 < ratios[1] < 0.6 and ratios[2] == ratios[3] == 0
    assert len(set(ratios[4:])) == 1, ratios[4:]
    evidence, _ = _infer(stack.settings, [Item(np.zeros((0, 1, 1, 3), np.uint8), a) for a in clips[:3]])
    assert [e.speech_ratio for e in evidence] == pytest.approx(ratios[:3], abs=1e-6)


def _infer(settings, items, batch_items=32):
    async def run():
        client = EmotionClient(settings.triton_grpc_url, batch_items=batch_items)
        try:
            await client.wait_ready(60)
            return await client.infer(items), await client.identity()
        finally:
            await client.close()

    return asyncio.run(run())


def test_real_faces_and_speech_give_ordered_probabilities(stack):
    face, speech = astronaut_view(), _speech()
    items = [Item(np.stack([face, face]), speech),                       # face + voice
             Item(np.stack([face]), np.zeros(0, np.float32)),            # video only
             Item(np.zeros((0, 1, 1, 3), np.uint8), speech),             # audio only
             Item(np.zeros((2, 270, 240, 3), np.uint8) + 40, np.zeros(16000, np.float32))]  # nothing
    results, (name, version, fusion) = _infer(stack.settings, items)
    assert name == "callstream-emotion" and version and 0 < fusion.min_speech_ratio < 1
    both, video, audio, nothing = (fuse_evidence(e, fusion) for e in results)
    assert both.probs.shape == (len(DFEW_LABELS),) and np.isclose(both.probs.sum(), 1, atol=1e-4)
    assert both.label == "happy" and both.face_found and both.speech_found and both.arousal is not None
    assert video.label == "happy" and video.face_found and not video.speech_found and video.arousal is None
    assert audio.label is not None and not audio.face_found and audio.speech_found and audio.confidence < 0.5
    assert nothing.probs is None and nothing.label is None and not nothing.face_found and not nothing.speech_found


def test_batched_and_unbatched_calls_agree(stack):
    face, speech = astronaut_view(), _speech()
    rng = np.random.default_rng(1)
    # Six views: batching never changes what one view's items get.
    items = [Item(np.stack([np.roll(face, int(rng.integers(-20, 20)), axis=1)] * 2),
                  speech * float(rng.uniform(0.3, 1)))
             for k in range(6)]
    batched, _ = _infer(stack.settings, items, batch_items=32)
    single, _ = _infer(stack.settings, items, batch_items=1)
    for a, b in zip(map(fuse_evidence, batched), map(fuse_evidence, single), strict=True):
        assert a.label == b.label and a.face_found == b.face_found and a.speech_found == b.speech_found
        assert np.abs(a.probs - b.probs).max() < 1e-4


@pytest.mark.parametrize("codec, rate", [("pcm_mulaw", 8000), ("pcm_alaw", 8000), ("pcm_s16le", 8000),
                                         ("pcm_s16le", 16000), ("libopus", 48000)])
def test_telephony_audio_gives_the_voice_analysis_of_wideband_audio(stack, tmp_path, codec, rate):
    """The same customer speech as 8 kHz G.711 (mu-law, A-law), 8 and 16 kHz PCM and 48 kHz Opus: the
    decoder brings all to 16 kHz, and each 1-s segment's speech decision and arousal must agree with
    the 48 kHz PCM reference (the VAD and the prosody cues live below 4 kHz)."""
    from callstream_lab.synth import generate_track
    from pipeline.media.decode import decode
    from pipeline.media.ffmpeg_bin import ffmpeg_exe

    def voice(acodec, ar, name):
        path = generate_track(ffmpeg_exe(), tmp_path / name, 16, video=False, acodec=acodec, rate=ar)
        audio = decode(ffmpeg_exe(), path, 2.0, 320).audio[0]
        items = [Item(np.zeros((0, 1, 1, 3), np.uint8), audio[i * 16000:(i + 1) * 16000]) for i in range(15)]
        results, (_, _, fusion) = _infer(stack.settings, items)
        return [fuse_evidence(e, fusion) for e in results]

    ref = voice("pcm_s16le", 48000, "ref.wav")
    got = voice(codec, rate, "x.mka" if codec == "libopus" else "x.wav")
    assert sum(r.speech_found for r in ref) >= 5                     # the reference has speech to compare
    agree = np.mean([a.speech_found == b.speech_found for a, b in zip(ref, got, strict=True)])
    assert agree >= 0.85, (codec, rate, [(a.speech_found, b.speech_found) for a, b in zip(ref, got, strict=True)])
    both = [(a.arousal, b.arousal) for a, b in zip(ref, got, strict=True) if a.speech_found and b.speech_found]
    assert both and np.mean([abs(a - b) for a, b in both]) < 0.1, both
