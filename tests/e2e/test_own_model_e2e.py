"""Bring your own model through the whole stack: `callstream models add` installs manifest-declared ONNX
face and voice nets the test builds into a model repository of its own, a Triton of its own loads them
live, and a worker serves them as its primary with the built-in model as its shadow on the same media."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from callstream_lab.stack import triton
from callstream_lab.stack.procs import free_port
from callstream_lab.synth import generate_call
from pipeline.ingest.producer import publish_recording
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import REPO_ROOT, Settings
from tests import model_kit
from tests.e2e.helpers import query, wait_chunks

pytestmark = pytest.mark.stack

BUILTIN = "fer-minixception+blazeface+silero-prosody/4"


@pytest.fixture(scope="module")
def byom(stack, model_repository, tmp_path_factory):
    """A Triton serving a scratch repository (the shared one keeps serving the checkout's), with the
    toy model added through the command line while it runs."""
    tmp = tmp_path_factory.mktemp("byom")
    repo = model_kit.scratch_repository(model_repository, tmp / "models")
    source = model_kit.write_model(tmp / "user-model")
    env, _ = stack.isolated("byom")
    env.update(CALLSTREAM_MODEL_REPOSITORY=str(repo), CALLSTREAM_TRITON_HTTP_PORT=str(free_port()),
               CALLSTREAM_TRITON_GRPC_PORT=str(free_port()), CALLSTREAM_TRITON_METRICS_PORT=str(free_port()))
    # The server's pid file and logs in a folder of its own; the workers keep the stack's state folder.
    served = Settings.from_env({**env, "CALLSTREAM_STATE_DIR": str(tmp / "triton-state")})
    triton.start(served)
    try:
        added = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "add", str(source)],
                               env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        assert added.returncode == 0, added.stderr[-3000:]
        # A net that passes its trial run on noise but answers bright faces with NaN.
        nan = model_kit.write_model(tmp / "nan-model", kind="nan", voice=False, name="nan")
        loaded = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "add", str(nan)],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        assert loaded.returncode == 0 and ": ready" in loaded.stdout, loaded.stderr[-3000:]
        # audeering's MSP-dim signature as published: batch fixed at 1, two outputs, arousal, dominance,
        # valence in 0..1; declared in the manifest, nothing edited.
        msp = model_kit.write_model(tmp / "msp-model", voice=False, name="msp")
        model_kit.export_msp_dim_voice(msp.parent / "msp-dim.onnx")
        msp.write_text(msp.read_text().replace("\n[fusion]", model_kit.MSP_DIM_VOICE + "\n[fusion]"))
        loaded = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "add", str(msp)],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        assert loaded.returncode == 0 and ": ready" in loaded.stdout, loaded.stderr[-3000:]
        # HSEmotion's face net and emotion2vec+ (with its head, batch 1), declared as MODEL_CARD shows.
        public = model_kit.write_public_model(tmp / "public-model")
        loaded = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "add", str(public)],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        assert loaded.returncode == 0 and ": ready" in loaded.stdout, loaded.stderr[-3000:]
        yield env, added.stdout
    finally:
        triton.stop(served)


def test_models_add_installs_and_loads_the_version_into_the_running_server(byom):
    _, out = byom
    assert "installed toy/1 as model toy-v1" in out and "loaded by Triton" in out and ": ready" in out
    listed = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "list"], env={**os.environ, **byom[0]},
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "toy/1" in rows["toy-v1"] and "ready" in rows["toy-v1"] and "voice:emotion net" in rows["toy-v1"]


def test_a_call_through_the_added_model_with_the_builtin_as_its_shadow(stack, byom, tmp_path):
    env, _ = byom
    env = {**env, "CALLSTREAM_TRITON_MODEL": "toy-v1", "CALLSTREAM_SHADOW_MODEL": "emotion"}
    settings = Settings.from_env(env)
    # The customer leaves the picture from 5 s to 11 s while speaking from 6 s: voice-only segments.
    recording = generate_call(ffmpeg_exe(), tmp_path / "call.mp4", seconds=14, away_customer=(5.0, 11.0))
    worker = stack.start_worker(env, "byom")
    try:
        sent = publish_recording(settings, recording, "byom-1")
        wait_chunks(settings, "byom-1", len(sent))
        rows = query(settings, "SELECT model_version, start_ms, label, face_found, speech_found FROM emotion_timeline "
                               "WHERE call_id = 'byom-1' AND role = 'customer' ORDER BY model_version, start_ms")
        by_version = {v: [r for r in rows if r.model_version == v] for v in {r.model_version for r in rows}}
        assert set(by_version) == {"toy/1", BUILTIN}
        assert all(len(v) == 14 for v in by_version.values())
        toy = by_version["toy/1"]
        faced = [r for r in toy if r.face_found]
        voice_only = [r for r in toy if r.speech_found and not r.face_found]
        # The toy face net says angry wherever a face is seen (contempt dropped); its voice net says happy
        # for speech at this level: voice-only segments carry the voice net's label.
        assert len(faced) >= 7 and all(r.label == "angry" for r in faced)
        assert len(voice_only) >= 3 and all(r.label == "happy" for r in voice_only)
        assert all(r.label == "happy" for r in by_version[BUILTIN] if r.face_found)
        # Each row says why: the voice net's top class on voice-only rows, the face net's where a face was.
        why = dict(query(settings, "SELECT start_ms, evidence->>'summary' FROM emotion_timeline WHERE call_id = "
                                   "'byom-1' AND role = 'customer' AND model_version = 'toy/1'"))
        for r in voice_only:
            assert why[r.start_ms].startswith("face: none in") and "; voice: happy" in why[r.start_ms], why
            assert why[r.start_ms].endswith("; fused: happy")
        assert all(why[r.start_ms].startswith("face: angry") for r in faced)
        heard = query(settings, "SELECT count(*) FROM segment_pieces WHERE call_id = 'byom-1' "
                                "AND model_version = 'toy/1' AND voice_probs IS NOT NULL")[0][0]
        assert heard >= len(voice_only)
        (cmp,) = query(settings, "SELECT * FROM model_comparison WHERE call_id = 'byom-1' AND role = 'customer'")
        assert (cmp.model_version_a, cmp.model_version_b) == (BUILTIN, "toy/1")
        assert cmp.segments == 14 and cmp.labelled_by_both >= 10
        # Faced segments disagree (happy against angry): agreement is low and the probabilities far apart.
        assert cmp.label_agreement < 0.5 and cmp.mean_abs_prob_diff > 0.1
        seconds = dict(query(settings, "SELECT label, seconds FROM label_seconds WHERE call_id = 'byom-1' "
                                       "AND role = 'customer' AND model_version = 'toy/1'"))
        assert seconds["angry"] >= 7 and seconds["happy"] >= 3
        # `timeline` shows one version, the primary's, and says the shadow's rows exist; --model picks one.
        def timeline(*extra):
            out = subprocess.run([sys.executable, "-m", "pipeline.cli", "timeline", "byom-1", *extra],
                                 env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr[-2000:]
            return out
        def labels(out):   # the label column of the timeline's rows ("  0.0-1.0   caller  angry ...")
            return [line.split()[2] for line in out.stdout.splitlines() if re.match(r"\s*\d+\.\d-\d", line)]
        def stored(version):
            return [r.label or "(none)" for r in by_version[version]]
        primary = timeline()
        assert f"model toy/1; the call also has rows of {BUILTIN} (14 segments)" in primary.stderr
        assert labels(primary) == stored("toy/1")
        shadow = timeline("--model", BUILTIN)
        assert "model " + BUILTIN + "; the call also has rows of toy/1" in shadow.stderr
        assert labels(shadow) == stored(BUILTIN) and stored(BUILTIN) != stored("toy/1")
        # The README's queries run as written, and the analyst views read the primary alone (this worker's
        # toy/1, its shadow's rows beside them): one row per participant, never one per version.
        readme = (REPO_ROOT / "README.md").read_text()
        for sql in re.findall(r"^```sql\n(.*?)^```", readme, re.M | re.S):
            query(settings, sql.strip().rstrip(";"))
        for view in ("participant_summary", "participant_trajectory"):
            rows = query(settings, f"SELECT participant_id, model_version FROM {view} WHERE call_id = 'byom-1'")
            assert rows and len(rows) == len({r.participant_id for r in rows}), (view, rows)
            assert {r.model_version for r in rows} == {"toy/1"}, (view, rows)
        assert query(settings, "SELECT count(*) FROM primary_timeline WHERE call_id = 'byom-1'")[0][0] == len(
            by_version["toy/1"])
        (summary,) = query(settings, "SELECT angry_seconds, round(angry_seconds / seconds, 2) AS share, "
                                     "round(avg(mean_arousal), 2) AS arousal FROM participant_summary "
                                     "WHERE call_id = 'byom-1' AND role = 'customer' GROUP BY 1, 2")
        assert summary.angry_seconds == seconds["angry"]   # numeric: round() and avg() work as written
    finally:
        stack.stop_worker(worker)
    assert "shadow model emotion" in (settings.state_dir / "logs" / "worker-byom.log").read_text(errors="replace")


def test_a_net_that_answers_nan_rejects_that_request_and_serves_the_next(byom):
    """At run time a NaN from a net is the request's fault (INVALID_ARG -> inference_rejected, a dead
    letter with the net's message), and the model goes on serving the next request."""
    import asyncio

    import numpy as np

    from pipeline.errors import BadChunk
    from pipeline.worker.triton_client import EmotionClient, Item

    env, _ = byom
    settings = Settings.from_env(env)
    face = np.stack([model_kit.astronaut_view()] * 2)
    gray = np.repeat(face.mean(axis=3, keepdims=True), 3, axis=3).astype(np.uint8)   # the same face, no colour

    async def run():
        client = EmotionClient(settings.triton_grpc_url, "nan-v1")
        try:
            await client.wait_ready(60)
            await client.identity()
            with pytest.raises(BadChunk) as err:
                await client.infer([Item(face, np.zeros(0, np.float32))])
            served = await client.infer([Item(gray, np.zeros(0, np.float32))])
            return served, err.value
        finally:
            await client.close()

    served, err = asyncio.run(run())
    assert served[0].faces == 2 and served[0].face_probs is not None
    assert err.reason == "inference_rejected" and "not finite" in err.detail


def _call(stack, env, primary, shadow, call_id, tmp_path):
    """A 10-s call whose customer leaves the picture from 3 s to 8 s, through a worker serving `primary`
    with `shadow` beside it; every chunk must be done at its first attempt (no retries on shape)."""
    env = {**env, "CALLSTREAM_TRITON_MODEL": primary, "CALLSTREAM_SHADOW_MODEL": shadow}
    settings = Settings.from_env(env)
    recording = generate_call(ffmpeg_exe(), tmp_path / "call.mp4", seconds=10, away_customer=(3.0, 8.0))
    worker = stack.start_worker(env, call_id)
    try:
        sent = publish_recording(settings, recording, call_id)
        wait_chunks(settings, call_id, len(sent))
    finally:
        stack.stop_worker(worker)
    ledger = query(settings, f"SELECT status, attempts FROM chunks WHERE call_id = '{call_id}'")
    assert len(ledger) == len(sent) and all(r == ("done", 1) for r in ledger), ledger
    rows = query(settings, "SELECT model_version, start_ms, label, speech_found, face_found, arousal, arousal_source, "
                           "voice_valence, voice_arousal, voice_dominance, evidence FROM emotion_timeline "
                           f"WHERE call_id = '{call_id}' AND role = 'customer' ORDER BY model_version, start_ms")
    return {v: [r for r in rows if r.model_version == v] for v in ("msp/1", "public/1")}


def _dimensional_rows_hold(msp):
    heard = [r for r in msp if r.voice_arousal is not None]
    assert len(heard) >= 3 and all(r.speech_found for r in heard)
    for r in heard:
        assert -1 <= r.voice_valence <= 1 and 0 <= r.voice_arousal <= 1
        assert abs(r.voice_dominance - 0.5) < 1e-3     # the stand-in's constant dominance, range 0..1
        assert r.arousal_source == "voice_net" and r.arousal == pytest.approx(r.voice_arousal)
        assert r.evidence["voice"]["dimensions"]["arousal"] == pytest.approx(r.voice_arousal, abs=1e-3)
        assert "prosodic_arousal" in r.evidence["voice"]
    assert [r for r in heard if not r.face_found and r.label]
    assert all(r.voice_valence is None and r.voice_arousal is None for r in msp if not r.speech_found)


def _classifier_rows_hold(public):
    assert all(r.label == "happy" for r in public if r.face_found)   # HSEmotion's Contempt dropped
    voice_only = [r for r in public if r.speech_found and not r.face_found]
    assert voice_only and all(r.label in ("angry", "neutral") for r in voice_only)   # emotion2vec+'s
    assert all(r.arousal_source == "prosody" and r.voice_valence is None for r in public if r.arousal is not None)
    assert any(r.arousal is not None for r in public)


def test_a_batch_1_dimensional_voice_net_as_primary_stores_its_valence_and_arousal(stack, byom, tmp_path):
    """The MSP-dim stand-in (batch 1 only) serves a whole call as the primary with the HSEmotion +
    emotion2vec+ model as its shadow: its valence, arousal and dominance stored where it heard speech,
    `arousal` taken from it and saying so, while the shadow's arousal stays prosodic."""
    env, _ = byom
    rows = _call(stack, env, "msp-v1", "public-v1", "byom-msp", tmp_path)
    assert len(rows["msp/1"]) == len(rows["public/1"]) == 10
    _dimensional_rows_hold(rows["msp/1"])
    _classifier_rows_hold(rows["public/1"])


def test_the_public_signatures_as_primary_with_the_dimensional_net_as_shadow(stack, byom, tmp_path):
    """The other way round: HSEmotion + emotion2vec+ (batch 1) primary, MSP-dim the shadow."""
    env, _ = byom
    rows = _call(stack, env, "public-v1", "msp-v1", "byom-public", tmp_path)
    assert len(rows["msp/1"]) == len(rows["public/1"]) == 10
    _dimensional_rows_hold(rows["msp/1"])
    _classifier_rows_hold(rows["public/1"])


# `callstream models eval`: clips and photographs through the served model, as the worker sends them.

@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return model_kit.labelled_clips(tmp_path_factory.mktemp("clips"))


def _served(env, model, run):
    import asyncio

    from pipeline.evaluation import Served

    async def go():
        served = await Served.connect(Settings.from_env(env).triton_grpc_url, model)
        try:
            return await run(served)
        finally:
            await served.client.close()
    return asyncio.run(go())


def test_models_eval_measures_the_served_model_per_modality(byom, clips):
    from pipeline.evaluation import evaluate_clips

    env, _ = byom
    result = _served(env, "toy-v1", lambda m: evaluate_clips(m, clips, 2.0, 480, 1000, ffmpeg_exe()))
    face, voice, fused = (result["scores"][m] for m in ("face", "voice", "fused"))
    assert result["clips"] == 4 and result["no_face"] == 2 and result["no_speech"] == 0
    # face: angry->angry, happy->angry; the two audio clips have no face label.
    assert (face.scored, face.unlabelled, face.war(), face.uar()) == (2, 2, 0.5, 0.5)
    # voice: angry->happy, happy->happy, happy->happy, neutral->neutral.
    assert (voice.scored, voice.war()) == (4, 0.75) and voice.uar() == pytest.approx((0 + 1 + 1) / 3)
    # fused: the face outweighs the voice where both are seen (angry, angry); audio clips as the voice.
    assert fused.war() == 0.75 and fused.uar() == pytest.approx((1 + 0.5 + 1) / 3)
    # Without a voice net (the built-in model) the voice is the arousal prior: it still labels speech.
    builtin = _served(env, "emotion", lambda m: evaluate_clips(m, clips[2:], 2.0, 480, 1000, ffmpeg_exe()))
    assert builtin["scores"]["voice"].scored == 2 and builtin["scores"]["face"].unlabelled == 2


def test_models_eval_prints_both_served_versions(byom, clips, tmp_path):
    env, _ = byom
    (tmp_path / "labels.csv").write_text("".join(f"{p},{label}\n" for p, label in clips[2:]))
    ran = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "eval", str(tmp_path / "labels.csv"),
                          "--model", "toy-v1", "--model", "emotion", "--per-clip"],
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = ran.stdout
    assert "toy-v1 (toy/1), clips: 2 clips, 2 without a face, 0 without speech" in out
    assert f"emotion ({BUILTIN}), clips" in out
    assert sum(line.startswith("  voice ") for line in out.splitlines()) == 2 and "   1.000   1.000" in out
    # --per-clip: a line per clip and version, its truth, and "-" where a modality gave no label (no face).
    names = {p.name for p, _ in clips[2:]}
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in names]
    assert len(rows) == 4 and all(r[2] == "-" and r[1] == r[3] for r in rows[:2]), rows


def test_models_eval_on_photographs_goes_through_the_served_face_path(byom, tmp_path):
    """A folder per label and a CSV of real photographs; an image whose face is not found (a black
    square) is counted under its label, not scored, and contempt (no DFEW column) is left out."""
    from PIL import Image
    from skimage import data

    from pipeline.evaluation import load, score_images, split

    env, _ = byom
    for folder in ("happiness", "contempt", "sadness"):
        (tmp_path / folder).mkdir()
    Image.fromarray(data.astronaut()).save(tmp_path / "happiness" / "astronaut.png")
    Image.fromarray(data.astronaut()[:, ::-1].copy()).save(tmp_path / "happiness" / "mirrored.jpg")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "contempt" / "x.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "sadness" / "black.png")
    items = split(load(tmp_path))[1]
    assert sorted(label for _, label in items) == ["happy", "happy", "sad"]
    report = _served(env, "emotion", lambda m: score_images(m, items, 480))
    assert report["images"] == 3 and report["face_detected"] == pytest.approx(2 / 3)
    assert report["accuracy"] == 1.0 and report["confusion"] == {"happy": {"happy": 2}}
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nhappiness/astronaut.png,happy\nhappiness/mirrored.jpg,neutral\n")
    report = _served(env, "emotion", lambda m: score_images(m, split(load(csv))[1], 480))
    assert report["accuracy"] == 0.5 and report["recall"]["neutral"] == 0.0
