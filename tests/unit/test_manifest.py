"""The model manifest, the label mapping, the voice window and the fusion they feed: pure code."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.media.segment import Segment, SegmentPlanner, context_span
from pipeline.model import manifest as mf
from pipeline.model import words_manifest
from pipeline.model.nets import NetOutputError, to_dfew
from pipeline.model.repository import _toml, check_config, config_parameters, render_config
from pipeline.settings import REPO_ROOT
from pipeline.shared.fusion import Evidence, FusionParams, fuse, fuse_evidence, merge
from pipeline.shared.labels import DFEW_LABELS
from tests import model_kit

BUILTIN = REPO_ROOT / "triton_models" / "emotion"


def test_the_builtin_manifest_and_its_config_agree():
    """Workers read the config, the model computes from the manifest: they must say the same."""
    import re

    m = mf.load(BUILTIN / mf.MANIFEST)
    config = (BUILTIN / "config.pbtxt").read_text()
    params = {k: {"string_value": v.encode().decode("unicode_escape")}
              for k, v in re.findall(r'parameters \{ key: "(\w+)", value: \{ string_value: "((?:[^"\\]|\\.)*)" \} \}',
                                     config)}
    check_config({"parameters": params}, m, "emotion")
    assert m.version == "4" and m.face[0].format == "onnx" and m.voice.emotion is None
    assert m.detector.kind == "blazeface" and m.detector.range == "short"


def test_a_manifest_from_before_blazeface_still_loads_and_its_tracking_keys_are_ignored():
    text = model_kit.manifest_text().replace("[fusion]", "[detector]\nkind = \"mtcnn\"\ntracking = true\n"
                                                         "search_every = 30\n\n[fusion]", 1)
    d = mf.parse(text).detector
    assert d.kind == "mtcnn" and d.files() == ("pnet.pt", "rnet.pt", "onet.pt")
    assert "tracking" not in d.model_dump()
    with pytest.raises(mf.ManifestError, match="detector"):
        mf.parse(text.replace("tracking = true", "tracking_typo = true"))


def test_a_config_that_disagrees_is_refused():
    m = mf.parse(model_kit.manifest_text())
    params = {k: {"string_value": v} for k, v in config_parameters(m).items()}
    params["fusion"] = {"string_value": FusionParams(voice_weight=0.9).to_json()}
    with pytest.raises(mf.ManifestError, match="parameter fusion"):
        check_config({"parameters": params}, m, "toy")


def test_render_config_sets_name_and_parameters_and_keeps_the_contract():
    m = mf.parse(model_kit.manifest_text())
    out = render_config((BUILTIN / "config.pbtxt").read_text(), "toy-v1", m)
    assert out.count('name: "toy-v1"') == 1 and '"toy/1"' in out and '"2000"' in out
    assert out.count('name: "VOICE_WINDOW"') == 1 and "dynamic_batching" in out


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("input_size = 48", "input_size = 48\nkernel = 3"), r"face\[0\]\.kernel: Extra inputs"),
    (lambda t: t.replace('contempt = "drop", ', ""), r"label 'contempt' maps to no DFEW column"),
    (lambda t: t.replace('sorrow = "sad"', 'sorrow = "glad"'),
     r"face\[0\]: label_map\.sorrow = 'glad': not a DFEW column \(neutral, .*\) nor \"drop\"$"),
    (lambda t: t.replace('contempt = "drop"', 'Contempt = "scorn"'), r"label_map\.Contempt = 'scorn': not a DFEW"),
    (lambda t: t.replace('contempt = "drop"', 'scorn = "drop"'), r"label_map names \['scorn'\]"),
    (lambda t: t.replace('color = "rgb"', 'color = "rgb"\nmean = [0.1, 0.2]'), r"mean has 2 values"),
    (lambda t: t.replace('window_s = 2.0', 'window_s = 0.2'), r"min_window_s is longer than window_s"),
    (lambda t: t.replace('name = "toy"', 'name = "../toy"'), r"name: String should match pattern"),
    (lambda t: t + "[[face", r"not valid TOML"),
])
def test_bad_manifests_say_which_file_and_key(edit, message):
    with pytest.raises(mf.ManifestError, match=message) as err:
        mf.parse(edit(model_kit.manifest_text()), "user/manifest.toml")
    assert str(err.value).startswith("user/manifest.toml: ")
    # One problem, in the validator's words: no pydantic prefix, no knock-on error of the table above.
    assert "Value error" not in str(err.value) and "should have at least 1 item" not in str(err.value)


def test_class_names_match_without_regard_to_case():
    text = model_kit.manifest_text().replace('label_map = { contempt = "drop", sorrow = "sad" }',
                                             'label_map = { Contempt = "DROP", SORROW = "Sad" }')
    face = mf.parse(text, "m.toml").face[0]
    np.testing.assert_array_equal(face.mapping(), mf.parse(model_kit.manifest_text(), "m.toml").face[0].mapping())


def test_paths_stay_inside_the_repository(tmp_path):
    repo = tmp_path / "models"
    assert mf.resolve(repo / "emotion", "../face_detector/1", repo, "k") == repo / "face_detector" / "1"
    for bad in ("../../etc/passwd", "/etc/passwd", "1/../../../x"):
        with pytest.raises(mf.ManifestError, match="k: "):
            mf.resolve(repo / "emotion", bad, repo, "k")


def test_labels_fold_or_drop_with_renormalisation():
    spec = mf.parse(model_kit.manifest_text()).face[0]
    m = spec.mapping()
    assert m.shape == (8, 7) and not m[0].any()             # contempt dropped
    assert m[4, DFEW_LABELS.index("sad")] == 1                # sorrow folded into sad
    assert m[1, DFEW_LABELS.index("happy")] == 1              # joy: an alias
    probs = np.array([[0.5, 0.25, 0.25, 0, 0, 0, 0, 0]])     # half on contempt
    out = to_dfew(probs, spec.model_copy(update={"output": "probabilities"}), m, "net")
    np.testing.assert_allclose(out[0, [1, 3]], [0.5, 0.5])   # the rest renormalised


def test_net_outputs_are_checked():
    spec = mf.parse(model_kit.manifest_text()).face[0]
    m = spec.mapping()
    with pytest.raises(NetOutputError, match=r"shape \(2, 5\)"):
        to_dfew(np.zeros((2, 5)), spec, m, "net")
    with pytest.raises(NetOutputError, match="not finite"):
        to_dfew(np.full((1, 8), np.nan), spec, m, "net")
    with pytest.raises(NetOutputError, match="dropped classes"):
        to_dfew(np.array([[1.0, 0, 0, 0, 0, 0, 0, 0]]), spec.model_copy(update={"output": "probabilities"}), m,
                "net")


def test_a_manifest_written_by_models_add_reads_back_the_same():
    m = mf.parse(model_kit.manifest_text())
    assert mf.parse(_toml(m.model_dump(exclude_none=True))) == m


@pytest.mark.parametrize("seg, expected", [
    (Segment(5000, 6000), Segment(4500, 6500)),     # centred
    (Segment(0, 1000), Segment(0, 2000)),           # shifted inward at the chunk's start
    (Segment(9000, 10000), Segment(8000, 10000)),   # and at its end
    (Segment(9500, 10000), Segment(8000, 10000)),   # a piece of a cell at the end
])
def test_the_voice_window_stays_inside_its_chunk(seg, expected):
    assert context_span(seg, 0, 10000, 2000) == expected
    assert context_span(Segment(0, 1000), 0, 1500, 2000) == Segment(0, 1500)   # shorter only with the chunk


def test_segments_wait_for_their_voice_window_mid_chunk():
    plain, voiced = SegmentPlanner(0, 1000, 100), SegmentPlanner(0, 1000, 100, context_ms=2000)
    assert [s.start_ms for s in plain.ready(4500)] == [0, 1000, 2000, 3000]
    assert [s.start_ms for s in voiced.ready(4500)] == [0, 1000]
    # Released mid-chunk or at its end, a segment's window is the same: the chunk's end is past it.
    for s in voiced.released:
        assert context_span(s, 0, 4500, 2000) == context_span(s, 0, 60000, 2000)


def test_a_voice_net_labels_voice_only_segments_and_fuses_with_the_face():
    face = np.array([0.05, 0.05, 0.05, 0.7, 0.05, 0.05, 0.05])
    heard = np.array([0.05, 0.7, 0.05, 0.05, 0.05, 0.05, 0.05])
    params = FusionParams(face_weight=1.0, voice_weight=0.5)
    voice_only = fuse(None, True, 0.9, heard, params)
    assert voice_only.modality == "voice" and voice_only.label == "happy"
    np.testing.assert_allclose(voice_only.probs, heard ** 0.5 / (heard ** 0.5).sum())
    both = fuse(face, True, 0.9, heard, params)
    expected = face * heard ** 0.5
    np.testing.assert_allclose(both.probs, expected / expected.sum())
    assert both.label == "angry" and both.modality == "face+voice"
    # Without speech the net's answer is not used; without a net, today's arousal path.
    assert fuse(face, False, None, heard, params).modality == "face"
    assert np.allclose(fuse(face, True, 0.9).probs, fuse(face, True, 0.9, None, params).probs)


def test_voice_probabilities_merge_by_speech_time():
    a = Evidence(0, 0, 0.0, None, 1000, 1.0, 0.5, np.eye(7)[1])
    b = Evidence(0, 0, 0.0, None, 1000, 0.5, 0.5, np.eye(7)[3])
    quiet = Evidence(0, 0, 0.0, None, 1000, 0.0, None, None)
    m = merge([a, b, quiet])
    np.testing.assert_allclose(m.voice_probs[[1, 3]], [2 / 3, 1 / 3])
    assert fuse_evidence(m, FusionParams()).label == "happy"


def test_fusion_parameters_survive_the_config():
    p = FusionParams(face_weight=0.8, voice_weight=0.4, arousal_weight=0.2, voice_only_mix=0.3, min_speech_ratio=0.1)
    assert FusionParams.from_json(p.to_json()) == p
    assert FusionParams.from_json('{"face_weight": 2, "unknown": 1}') == FusionParams(face_weight=2.0)


def test_model_kit_manifest_is_what_the_docs_show():
    """docs/MODEL_CARD.md's example manifest parses (the worked example must work as written)."""
    text = (REPO_ROOT / "docs" / "MODEL_CARD.md").read_text()
    start = text.index("```toml\n", text.index("## Bring your own model")) + len("```toml\n")
    example = mf.parse(text[start:text.index("```", start)], "docs/MODEL_CARD.md")
    assert example.voice.emotion is not None and example.face[0].format == "onnx"
    assert Path(example.face[0].file).suffix == ".onnx"


def test_valence_and_arousal_become_a_distribution_on_the_circumplex():
    from pipeline.model.nets import circumplex

    probs = circumplex(np.array([0.9, 0.2, 0.5]), np.array([0.6, 0.85, 0.2]))
    assert [DFEW_LABELS[int(i)] for i in probs.argmax(1)] == ["happy", "angry", "neutral"]
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    text = model_kit.manifest_text(voice_kind="va")
    spec = mf.parse(text).voice.emotion
    # valence 1.0 of -1..1 and arousal 0.6: happy; the net's raw answer is checked for shape and numbers.
    assert DFEW_LABELS[int(to_dfew(np.array([[1.0, 0.6]]), spec, np.zeros((2, 7)), "v").argmax())] == "happy"
    with pytest.raises(NetOutputError, match="declares \\(batch, 2\\): valence, arousal"):
        to_dfew(np.zeros((1, 3)), spec, np.zeros((2, 7)), "v")
    with pytest.raises(mf.ManifestError, match="a valence_arousal net has no labels"):
        mf.parse(text.replace('output = "valence_arousal"', 'output = "valence_arousal"\nlabels = ["a", "b"]'))
    with pytest.raises(mf.ManifestError, match="a face net scores classes"):
        mf.parse(text.replace('layout = "NCHW"', 'layout = "NCHW"\noutput = "valence_arousal"'))


def test_the_manifest_reference_is_generated_and_describes_every_key():
    """docs/MANIFEST.md is what the code validates: a key added without a description, or a default
    changed without regenerating the file (`./run models reference > docs/MANIFEST.md`), fails here."""
    for _, model in mf.TABLES + words_manifest.TABLES:
        missing = [key for key, field in model.model_fields.items() if not field.description]
        assert not missing, f"{model.__name__}: describe {missing} (Field(description=...))"
    assert (REPO_ROOT / "docs" / "MANIFEST.md").read_text() == mf.reference() + "\n"
    assert "| `output_name` |" in mf.reference() and "| `dimensions` |" in mf.reference()
