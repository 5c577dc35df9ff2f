"""`callstream models eval`'s datasets: each supported layout is read, and WAR / UAR as computed by hand.
The evaluation of served models on clips the tests generate is in tests/e2e/test_own_model_e2e.py."""

import pytest

from pipeline.evaluation import DatasetError, Scores, label_from_name, load
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
    return model_kit.labelled_clips(tmp_path_factory.mktemp("clips"))


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
