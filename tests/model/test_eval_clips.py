"""`callstream models eval` on labelled clips the tests generate: each supported layout is read, and
WAR / UAR per modality come out as computed by hand from what the toy nets are built to say."""

from types import SimpleNamespace

import pytest

from pipeline.evaluation import DatasetError, Scores, evaluate_clips, label_from_name, load
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.model.analysis import Analyzer
from pipeline.model.repository import add
from tests import model_kit


def test_ravdess_and_crema_d_names():
    from pathlib import Path

    assert label_from_name(Path("01-01-05-01-02-01-12.mp4")) == "angry"
    assert label_from_name(Path("03-01-02-02-01-02-07.wav")) == "neutral"   # calm has no column: neutral
    assert label_from_name(Path("1001_DFA_ANG_XX.wav")) == "angry"
    assert label_from_name(Path("1091_WSI_SAD_LO.flv")) == "sad"
    assert label_from_name(Path("01-01-09-01-02-01-12.mp4")) is None and label_from_name(Path("x.mp4")) is None


def test_war_and_uar_by_hand():
    s = Scores()
    for truth, pred in [("happy", "happy"), ("happy", "happy"), ("happy", "sad"), ("sad", "sad"), ("angry", None)]:
        s.add(truth, pred)
    assert s.scored == 4 and s.unlabelled == 1
    assert s.war() == 3 / 4                       # 3 of the 4 labelled clips
    assert s.uar() == pytest.approx((2 / 3 + 1) / 2)   # happy 2/3, sad 1/1
    assert Scores().war() is None and Scores().uar() is None


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four clips: an angry and a happy face speaking at a normal level, happy speech alone, and
    neutral whispered speech alone. The toy face net says angry on any face; its voice net happy on
    normal speech and neutral on whispers."""
    d = tmp_path_factory.mktemp("clips")
    loud, quiet = model_kit.speech(0.1, 3.0), model_kit.speech(0.01, 3.0)
    return [(model_kit.write_clip(d / "v-angry.mp4", loud), "angry"),
            (model_kit.write_clip(d / "v-happy.mp4", loud), "happy"),
            (model_kit.write_clip(d / "a-happy.wav", loud), "happy"),
            (model_kit.write_clip(d / "a-neutral.wav", quiet), "neutral")]


@pytest.fixture(scope="module")
def toy(model_repository, tmp_path_factory):
    repo = model_kit.scratch_repository(model_repository, tmp_path_factory.mktemp("repo") / "models")
    version, _, _ = add(model_kit.write_model(tmp_path_factory.mktemp("user") / "toy"), repo)
    return repo, version.triton_name


def test_each_layout_reads_the_same_labels(clips, tmp_path):
    expected = sorted(label for _, label in clips)
    # A folder per label.
    for path, label in clips:
        (tmp_path / "folders" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folders" / label / path.name).symlink_to(path)
    assert sorted(label for _, label in load(tmp_path / "folders")) == expected
    # A CSV of path,label.
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in clips))
    assert [label for _, label in load(tmp_path / "labels.csv")] == [label for _, label in clips]
    # RAVDESS and CREMA-D names.
    ravdess = {"angry": "05", "happy": "03", "neutral": "01"}
    crema = {"angry": "ANG", "happy": "HAP", "neutral": "NEU"}
    for k, (path, label) in enumerate(clips):
        (tmp_path / "ravdess").mkdir(exist_ok=True)
        (tmp_path / "ravdess" / f"01-01-{ravdess[label]}-01-01-01-{k + 1:02d}{path.suffix}").symlink_to(path)
        (tmp_path / "crema").mkdir(exist_ok=True)
        (tmp_path / "crema" / f"10{k + 1:02d}_IEO_{crema[label]}_XX{path.suffix}").symlink_to(path)
    assert sorted(label for _, label in load(tmp_path / "ravdess")) == expected
    assert sorted(label for _, label in load(tmp_path / "crema")) == expected
    with pytest.raises(DatasetError, match="bored"):
        (tmp_path / "folders" / "bored").mkdir()
        load(tmp_path / "folders")
    with pytest.raises(DatasetError, match="does not exist"):
        load(tmp_path / "missing")


def test_war_and_uar_per_modality_on_generated_clips(clips, toy, model_repository):
    repo, name = toy
    analyzer = Analyzer.load(repo, model=name)
    result = evaluate_clips(analyzer, clips, 2.0, 480, 1000, ffmpeg_exe())
    face, voice, fused = (result["scores"][m] for m in ("face", "voice", "fused"))
    assert result["clips"] == 4 and result["no_face"] == 2 and result["no_speech"] == 0
    # face: angry->angry, happy->angry; the two audio clips have no face label.
    assert (face.scored, face.unlabelled, face.war(), face.uar()) == (2, 2, 0.5, 0.5)
    # voice: angry->happy, happy->happy, happy->happy, neutral->neutral.
    assert (voice.scored, voice.war()) == (4, 0.75) and voice.uar() == pytest.approx((0 + 1 + 1) / 3)
    # fused: the face outweighs the voice where both are seen (angry, angry); audio clips as the voice.
    assert fused.war() == 0.75 and fused.uar() == pytest.approx((1 + 0.5 + 1) / 3)
    # Without a voice net (the built-in model) the voice is the arousal prior: it still labels speech.
    builtin = evaluate_clips(Analyzer.load(model_repository), clips[2:], 2.0, 480, 1000, ffmpeg_exe())
    assert builtin["scores"]["voice"].scored == 2 and builtin["scores"]["face"].unlabelled == 2


def test_the_command_prints_both_versions(clips, toy, tmp_path, capsys):
    from pipeline.cli.models import evaluate

    repo, name = toy
    (tmp_path / "labels.csv").write_text("".join(f"{p},{label}\n" for p, label in clips[2:]))
    settings = SimpleNamespace(model_repository=repo, triton_model="emotion", sample_fps=2.0, frame_width=480,
                               segment_ms=1000, ffmpeg_binary="")
    args = SimpleNamespace(dataset=str(tmp_path / "labels.csv"), limit=0, model=[name, "emotion"], per_clip=True)
    assert evaluate(settings, args) == 0
    out = capsys.readouterr().out
    assert "toy-v1 (toy/1), clips: 2 clips, 2 without a face, 0 without speech" in out
    assert "emotion (fer-minixception+mtcnn-tracked+silero-prosody/3), clips" in out
    assert sum(line.startswith("  voice ") for line in out.splitlines()) == 2 and "   1.000   1.000" in out
    # --per-clip: a line per clip and version, its truth, and "-" where a modality gave no label (no face).
    names = {p.name for p, _ in clips[2:]}
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in names]
    assert len(rows) == 4 and all(r[2] == "-" and r[1] == r[3] for r in rows[:2]), rows
