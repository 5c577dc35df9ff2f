"""Bring your own model, in process: manifest-declared ONNX nets the tests build, run by the same
Analyzer the `emotion` model runs; `models add` validating and installing them; bad models refused."""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model import manifest as mf
from pipeline.model.analysis import Analyzer
from pipeline.model.nets import NetInputError, NetOutputError
from pipeline.model.repository import add, installed
from pipeline.shared.labels import DFEW_LABELS
from tests import model_kit


@pytest.fixture(scope="module")
def repo(model_repository, tmp_path_factory):
    return model_kit.scratch_repository(model_repository, tmp_path_factory.mktemp("repo") / "models")


@pytest.fixture(scope="module")
def toy(repo, tmp_path_factory):
    """The toy model installed into the scratch repository, and its analyzer."""
    source = model_kit.write_model(tmp_path_factory.mktemp("user") / "toy")
    version, report, new = add(source, repo)
    assert new and version.model_version == "toy/1" and version.triton_name == "toy-v1"
    return version, Analyzer.load(repo, model=version.triton_name)


def test_the_face_net_answers_as_built_through_its_manifest(toy):
    """Labels as the net dictates: contempt is dropped (else it would win), anger wins on any visible
    crop, a black crop is neutral; the ONNX file gives the torch net's logits."""
    _, analyzer = toy
    net = analyzer.faces[0]
    crops = np.stack([np.full((48, 48, 3), 200, np.uint8), np.zeros((48, 48, 3), np.uint8)])
    probs = net.probs(crops)
    assert [DFEW_LABELS[i] for i in probs.argmax(1)] == ["angry", "neutral"]
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    with torch.no_grad():
        logits = model_kit.face_net()(torch.from_numpy(net.prepare(crops))).numpy()
    np.testing.assert_allclose(net.run(net.prepare(crops)), logits, atol=1e-5, rtol=1e-5)  # float32 sums


def test_the_voice_net_labels_speech_by_its_level_and_ignores_silence(toy):
    _, analyzer = toy
    loud, quiet = model_kit.speech(0.1, 1.0), model_kit.speech(0.01, 1.0)
    silence = np.zeros(16000, np.float32)
    audio = np.stack([loud, quiet, silence])
    frames = np.zeros((3, 1, 16, 16, 3), np.uint8)
    out = analyzer.run(frames, np.zeros((3, 1), bool), audio, np.full(3, 16000))
    heard = out["VOICE_PROBS"]
    assert DFEW_LABELS[int(heard[0].argmax())] == "happy" and DFEW_LABELS[int(heard[1].argmax())] == "neutral"
    assert not heard[2].any() and not out["SPEECH_FOUND"][2, 0]
    # A voice-only segment gets the voice net's label, not the arousal prior's.
    assert DFEW_LABELS[int(out["PROBS"][0].argmax())] == "happy" and out["SPEECH_FOUND"][0, 0]
    # The ONNX file against the torch net it came from.
    v = analyzer.voice_net
    with torch.no_grad():
        logits = model_kit.voice_net()(torch.from_numpy(loud[None])).numpy()
    np.testing.assert_allclose(v.run(v.prepare(loud)[None]), logits, atol=1e-5, rtol=1e-5)


def test_face_and_voice_fuse_with_the_manifest_weights(toy):
    _, analyzer = toy
    view = model_kit.astronaut_view()
    out = analyzer.run(np.stack([np.stack([view, view])]), np.ones((1, 2), bool), model_kit.speech(0.1, 1.0)[None],
                       np.array([16000]))
    face, heard = out["FACE_PROBS"][0].astype(np.float64), out["VOICE_PROBS"][0].astype(np.float64)
    expected = face * heard ** 0.5
    np.testing.assert_allclose(out["PROBS"][0], expected / expected.sum(), atol=1e-5)
    assert DFEW_LABELS[int(out["PROBS"][0].argmax())] == "angry" and out["FACE_FOUND"][0, 0]


def test_the_voice_window_comes_from_voice_window_and_not_the_item_alone(toy):
    """With VOICE_WINDOW the net hears the context the worker cut; without, the item's own audio."""
    _, analyzer = toy
    item = np.zeros((1, 16000), np.float32)
    item[0, :8000] = model_kit.speech(0.1, 0.5)
    window = np.concatenate([model_kit.speech(0.01, 1.0), item[0]])[None]
    from pipeline.model.analysis import Request

    frames = np.zeros((1, 1, 16, 16, 3), np.uint8)
    own = analyzer.run_many([Request.of(frames, np.zeros((1, 1), bool), item, [16000])])[0]
    ctx = analyzer.run_many([Request.of(frames, np.zeros((1, 1), bool), item, [16000], window,
                                        [window.shape[1]])])[0]
    assert not np.allclose(own["VOICE_PROBS"], ctx["VOICE_PROBS"])


def test_models_add_installs_a_version_with_config_and_info(toy, repo):
    version, _ = toy
    folder = repo / version.triton_name
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["INSTALL_INFO.json", "face.onnx", "model.py",
                                                                  "voice.onnx"]
    config = (folder / "config.pbtxt").read_text()
    assert 'name: "toy-v1"' in config and '"toy/1"' in config and '"2000"' in config
    info = json.loads((folder / "1" / "INSTALL_INFO.json").read_text())
    assert info["model_version"] == "toy/1" and len(info["sha256"]) == 64
    assert {v.model_version for v in installed(repo)} >= {"toy/1", "fer-minixception+blazeface+silero-prosody/4"}


def test_adding_again_is_a_no_op_and_other_contents_need_a_new_version(toy, repo, tmp_path):
    version, _ = toy
    again, _, new = add(Path(version.info["source"]), repo)
    assert not new and again.triton_name == version.triton_name
    changed = model_kit.write_model(tmp_path / "changed")
    changed.write_text(changed.read_text().replace("voice_weight = 0.5", "voice_weight = 0.7"))
    with pytest.raises(mf.ManifestError, match="already installed .* new `version`"):
        add(changed, repo)
    # Without a version, the next one is assigned.
    unversioned = model_kit.write_model(tmp_path / "next", version=None)
    assigned, _, new = add(unversioned, repo)
    assert new and assigned.model_version == "toy/2"


@pytest.mark.parametrize("case, message", [
    ("unknown_key", r"face\[0\]\.input_sise: Extra inputs are not permitted"),
    ("unmapped_label", r"face\[0\]: .*label 'contempt' maps to no DFEW column"),
    ("wrong_shape", r"face\[0\] \(toy-face\): trial run failed: .*returned shape \(1, 5\)"),
    ("nan", None),
    ("not_a_model", r"face\[0\]\.file: face\.onnx is not an ONNX model"),
    ("escape", r"detector\.folder: an installed model uses the repository's built-in detector"),
    ("bad_layout", r"face\[0\]: the net takes input \[None, 3, 48, 48\]; the manifest declares NHWC"),
])
def test_bad_models_never_reach_the_repository(repo, tmp_path, case, message):
    kind = {"wrong_shape": "wrong_shape", "nan": "nan"}.get(case, "ok")
    path = model_kit.write_model(tmp_path / case, kind=kind, voice=False, name=f"bad-{case}")
    text = path.read_text()
    if case == "unknown_key":
        text = text.replace("input_size = 48", "input_sise = 48")
    elif case == "unmapped_label":
        text = text.replace('contempt = "drop", ', "")
    elif case == "not_a_model":
        (tmp_path / case / "face.onnx").write_bytes(b"this is not a model at all")
    elif case == "escape":
        text += '\n[detector]\nfolder = "../../etc"\n'
    elif case == "bad_layout":
        text = text.replace('layout = "NCHW"', 'layout = "NHWC"')
    path.write_text(text)
    before = sorted(p.name for p in repo.iterdir())
    if case == "nan":
        # Noise is as red as it is blue: the trial run passes; a skin-coloured crop gives NaN.
        version, _, _ = add(path, repo)
        analyzer = Analyzer.load(repo, model=version.triton_name)
        with pytest.raises(NetOutputError, match="not finite"):
            analyzer.faces[0].probs(np.broadcast_to(np.array([200, 120, 90], np.uint8), (1, 48, 48, 3)).copy())
        assert analyzer.faces[0].probs(np.full((1, 48, 48, 3), 128, np.uint8)).shape == (1, 7)
        return
    with pytest.raises(mf.ManifestError, match=message) as err:
        add(path, repo)
    # The user's manifest is named, never the staged copy the trial ran on (deleted by then).
    assert str(err.value).startswith(f"{path.resolve()}: ") or str(err.value).startswith(f"{path}: "), err.value
    assert sorted(p.name for p in repo.iterdir()) == before


def test_several_face_nets_pool_as_a_weighted_geometric_mean(repo, tmp_path):
    """Two [[face]] entries with different crops: the second is cut from the detector's boxes."""
    from pipeline.model.analysis import Request, pool
    from pipeline.model.crops import face_crop

    source = model_kit.write_model(tmp_path / "pair", voice=False, name="pair")
    text = source.read_text()
    second = text[text.index("[[face]]"):text.index("\n[fusion]")].replace('name = "toy-face"', 'name = "wide"')
    second = second.replace("input_size = 48", "input_size = 48\ncrop_margin = 0.4\nweight = 0.5")
    source.write_text(text.replace("\n[fusion]", "\n" + second + "\n[fusion]"))
    version, _, _ = add(source, repo)
    analyzer = Analyzer.load(repo, model=version.triton_name)
    assert [f.spec.name for f in analyzer.faces] == ["toy-face", "wide"]
    view = model_kit.astronaut_view()
    frames = np.stack([np.stack([view])])
    r = Request.of(frames, np.ones((1, 1), bool), np.zeros((1, 1), np.float32), [0])
    flat, found = analyzer.detect(r)
    assert found.scores[0] > 0.9
    first = analyzer.faces[0].probs(found.crops[:1])
    wide = analyzer.faces[1].probs(face_crop(flat[0], found.boxes[0], analyzer.faces[1].crop, found.eyes[0])[None])
    np.testing.assert_allclose(analyzer.expressions([flat], [found])[0][:1], pool([(1.0, first), (0.5, wide)]),
                               atol=1e-6)
    assert not np.allclose(first, wide)   # the wider crop is another input


def test_a_valence_arousal_voice_net_is_placed_on_the_circumplex(repo, tmp_path):
    source = model_kit.write_model(tmp_path / "va", voice_kind="va", name="va")
    version, report, _ = add(source, repo)
    analyzer = Analyzer.load(repo, model=version.triton_name)
    audio = np.stack([model_kit.speech(0.1, 1.0), model_kit.speech(0.01, 1.0)])
    out = analyzer.run(np.zeros((2, 1, 16, 16, 3), np.uint8), np.zeros((2, 1), bool), audio, np.full(2, 16000))
    assert [DFEW_LABELS[int(p.argmax())] for p in out["VOICE_PROBS"]] == ["happy", "neutral"]
    assert [DFEW_LABELS[int(p.argmax())] for p in out["PROBS"]] == ["happy", "neutral"]


def test_a_net_exported_with_batch_1_is_served_one_window_at_a_time(repo, tmp_path):
    """Public ONNX exports often fix the batch at 1; the worker stacks equal-length windows. The trial
    runs the batches the worker sends, and the runner feeds such a net one window at a time."""
    folder = tmp_path / "b1"
    source = model_kit.write_model(folder, voice=True, name="batch-one")
    model_kit.export_voice(folder / "voice.onnx", batch=1)
    version, report, _ = add(source, repo)
    assert report["voice"]["max_batch"] == 1 and report["voice"]["input_shape"][0] == 1
    v = Analyzer.load(repo, model=version.triton_name).voice_net
    windows = [model_kit.speech(rms, 1.0) for rms in (0.1, 0.01, 0.1, 0.01)]
    together = v.probs(windows)
    alone = np.concatenate([v.probs([w]) for w in windows])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert [DFEW_LABELS[i] for i in together.argmax(1)] == ["happy", "neutral", "happy", "neutral"]


def test_a_torchscript_net_that_only_takes_batch_1_is_refused_in_one_line(repo, tmp_path):
    folder = tmp_path / "ts1"
    source = model_kit.write_model(folder, voice=False, name="ts-batch-one")

    class One(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.shape[0] == 1, "this export takes one crop"
            m = x.mean(dim=(1, 2, 3))
            z = torch.zeros_like(m)
            return torch.stack([30 * m, z, 20 * m, z + 2, z, z, z, z], dim=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch.jit.script: still how TorchScript is made
        torch.jit.script(One()).save(str(folder / "face.pt"))
    source.write_text(source.read_text().replace('file = "face.onnx"', 'file = "face.pt"\nformat = "torchscript"'))
    before = sorted(q.name for q in repo.iterdir())
    with pytest.raises(mf.ManifestError, match=r"face\[0\] \(toy-face\): trial run failed \(at batches of 1 and 8"
                                               r".*TorchScript refused input \[8, 3, 48, 48\]") as err:
        add(source, repo)
    assert "\n" not in str(err.value)
    assert sorted(q.name for q in repo.iterdir()) == before


def test_a_net_that_refuses_a_request_fails_that_request_for_good_and_serves_the_others(repo, tmp_path):
    """ONNX Runtime's refusal of one request's inputs is a NetInputError (the Triton model answers it
    INVALID_ARG, which the worker dead-letters as inference_rejected at once), not an error to retry;
    other requests are answered."""
    folder = tmp_path / "framed"
    source = model_kit.write_model(folder, voice=True, name="framed")
    model_kit.export_framed_voice(folder / "voice.onnx")
    version, _, _ = add(source, repo)          # the trial's windows (0.5 s, 2 s) are multiples of 320
    v = Analyzer.load(repo, model=version.triton_name).voice_net
    assert DFEW_LABELS[int(v.probs([model_kit.speech(0.1, 1.0)])[0].argmax())] == "happy"
    with pytest.raises(NetInputError, match=r"voice\.onnx: ONNX Runtime refused input \[1, 16001\]: "):
        v.probs([model_kit.speech(0.1, 16001 / 16000)])


def _with_voice(folder, name, export, voice_toml):
    """A toy face net with a voice net of a public signature beside it (`export(path)` writes its ONNX
    file, `voice_toml` declares it as its publisher's export is declared); the manifest's path."""
    source = model_kit.write_model(folder, voice=False, name=name)
    export(folder / re.search(r'file = "([^"]+)"', voice_toml).group(1))
    source.write_text(source.read_text().replace("\n[fusion]", voice_toml + "\n[fusion]"))
    return source


def _two_windows(analyzer):
    """A loud and a whispered 1-s window through the whole analysis, no face: its outputs."""
    audio = np.stack([model_kit.speech(0.1, 1.0), model_kit.speech(0.01, 1.0)])
    return analyzer.run(np.zeros((2, 1, 16, 16, 3), np.uint8), np.zeros((2, 1), bool), audio, np.full(2, 16000))


def test_a_dimensional_net_with_two_outputs_installs_as_published_without_editing_its_graph(repo, tmp_path):
    """audeering's MSP-dim signature: the second output is the one to read, its columns are arousal,
    dominance, valence in 0..1, and its batch is fixed at 1. The manifest says so; nothing is edited."""
    source = _with_voice(tmp_path / "msp", "msp-dim", model_kit.export_msp_dim_voice, model_kit.MSP_DIM_VOICE)
    version, report, _ = add(source, repo)
    assert report["voice"]["max_batch"] == 1
    analyzer = Analyzer.load(repo, model=version.triton_name)
    assert analyzer.voice_net.run.output_name == "logits"
    out = _two_windows(analyzer)
    # The same places on the circumplex as the "va" toy's (its numbers, rescaled to 0..1).
    assert [DFEW_LABELS[int(p.argmax())] for p in out["VOICE_PROBS"]] == ["happy", "neutral"]


def test_the_hsemotion_face_net_installs_as_published_with_its_class_names_and_contempt_dropped(repo, tmp_path):
    """HSEmotion's enet_b0_8_best_afew signature with emotion2vec+ beside it, the manifest as MODEL_CARD
    documents it: capitalised class names match, Contempt (which would win) is dropped."""
    version, report, _ = add(model_kit.write_public_model(tmp_path / "public"), repo)
    assert report["face"][0]["input_shape"][1:] == [3, 224, 224]
    analyzer = Analyzer.load(repo, model=version.triton_name)
    frames = np.stack([model_kit.astronaut_view()] * 2)[None]
    out = analyzer.run(frames, np.ones((1, 2), bool), model_kit.speech(0.1, 1.0)[None], np.full(1, 16000))
    assert bool(out["FACE_FOUND"][0, 0]) and DFEW_LABELS[int(out["FACE_PROBS"][0].argmax())] == "happy"
    assert DFEW_LABELS[int(out["VOICE_PROBS"][0].argmax())] == "angry"


def test_an_emotion2vec_export_with_its_head_installs_as_published_and_drops_other_and_unknown(repo, tmp_path):
    """emotion2vec+'s signature: batch fixed at 1, nine classes in its order, two of them (other, unknown)
    no emotion at all. The manifest lists them and drops those two; nothing is edited."""
    source = _with_voice(tmp_path / "e2v", "e2v", model_kit.export_emotion2vec_voice, model_kit.EMOTION2VEC_VOICE)
    version, report, _ = add(source, repo)
    assert report["voice"]["max_batch"] == 1
    out = _two_windows(Analyzer.load(repo, model=version.triton_name))
    assert [DFEW_LABELS[int(p.argmax())] for p in out["VOICE_PROBS"]] == ["angry", "neutral"]
    np.testing.assert_allclose(out["VOICE_PROBS"].sum(axis=1), 1, atol=1e-5)   # other, unknown renormalised away
    assert np.isnan(out["VOICE_DIMS"]).all()                                     # a classifier has no dimensions


def test_an_emotion2vec_export_without_its_head_is_refused_naming_the_shape(repo, tmp_path):
    """FunASR's own ONNX export stops at the encoder (frame features): refused in one line that says what
    came back and what the manifest expects, before anything reaches the repository."""
    source = _with_voice(tmp_path / "e2v-features", "e2v-features",
                         lambda path: model_kit.export_emotion2vec_voice(path, head=False), model_kit.EMOTION2VEC_VOICE)
    with pytest.raises(mf.ManifestError, match=r"returned shape \(1, 25, 768\); the manifest declares \(batch, 9\)"):
        add(source, repo)
    assert not list(repo.glob("e2v-features*"))


@pytest.mark.parametrize("edit, message", [
    ('output_name = "logits"', r"voice\.emotion\.output_name: msp-dim\.onnx has no output 'scores'; its outputs "
                               r"are \['hidden_states', 'logits'\]$"),
    ('dimensions = ["arousal", "dominance", "valence"]', r"dimensions \['arousal', 'dominance'\]: name valence "
                                                         r"exactly once"),
    ("", r"voice\.emotion: trial run failed.*returned shape \(1, 1024\)"),
])
def test_a_dimensional_net_declared_wrong_is_refused_naming_the_key(repo, tmp_path, edit, message):
    voice = model_kit.MSP_DIM_VOICE
    if edit.startswith("output_name"):
        voice = voice.replace(edit, 'output_name = "scores"')
    elif edit.startswith("dimensions"):
        voice = voice.replace(edit, 'dimensions = ["arousal", "dominance"]')
    else:   # no output_name: the first output (hidden_states) is read
        voice = voice.replace('output_name = "logits"\n', "")
    source = _with_voice(tmp_path / "msp-bad", "msp-bad", model_kit.export_msp_dim_voice, voice)
    with pytest.raises(mf.ManifestError, match=message):
        add(source, repo)


def test_refresh_gives_versions_installed_by_an_older_release_this_releases_glue(repo, tmp_path):
    """model.py and config.pbtxt are copied at install; after an upgrade that moved the model's code or
    added an output, refresh rewrites them (the nets and manifest, the version's identity, stay)."""
    from pipeline.model.repository import refresh

    version, _, _ = add(model_kit.write_model(tmp_path / "old", name="old-release"), repo)
    code, config = version.folder / "1" / "model.py", version.folder / "config.pbtxt"
    code.write_text("from pipeline.inference.analysis import Analyzer   # an older release's layout\n")
    config.write_text(config.read_text().replace('  { name: "VOICE_DIMS", data_type: TYPE_FP32, dims: [ 3 ] }\n',
                                                 ""))
    nets = {p: p.read_bytes() for p in version.folder.glob("*.onnx")}
    assert version.triton_name in refresh(repo)
    assert code.read_text() == (repo / "emotion" / "1" / "model.py").read_text()
    assert "VOICE_DIMS" in config.read_text() and f'name: "{version.triton_name}"' in config.read_text()
    assert {p: p.read_bytes() for p in version.folder.glob("*.onnx")} == nets
    assert version.triton_name not in refresh(repo)
