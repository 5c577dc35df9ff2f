"""`callstream models eval` on a small labelled set of real photographs (folder per label and CSV)."""

import numpy as np
import pytest
from PIL import Image

from pipeline.modelbuild.evaluate import canonical, evaluate, load_dataset


@pytest.fixture
def dataset(tmp_path):
    from skimage import data

    (tmp_path / "happiness").mkdir()
    (tmp_path / "contempt").mkdir()  # not a DFEW label: skipped, as its alias maps to nothing
    Image.fromarray(data.astronaut()).save(tmp_path / "happiness" / "astronaut.png")
    Image.fromarray(data.astronaut()[:, ::-1].copy()).save(tmp_path / "happiness" / "mirrored.jpg")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "contempt" / "x.png")
    return tmp_path


def test_labels_and_aliases():
    assert canonical("Happiness") == "happy" and canonical("anger") == "angry" and canonical("contempt") is None
    with pytest.raises(ValueError):
        canonical("bored")


def test_folder_and_csv_datasets_evaluate(dataset, model_repository, capsys):
    items = load_dataset(dataset)
    assert [label for _, label in items] == ["happy", "happy"]
    report = evaluate(model_repository, dataset)
    assert report["images"] == 2 and report["face_detected"] == 1.0
    assert report["accuracy"] == 1.0 and report["confusion"]["happy"]["happy"] == 2
    csv = dataset / "labels.csv"
    csv.write_text("path,label\nhappiness/astronaut.png,happy\nhappiness/mirrored.jpg,neutral\n")
    report = evaluate(model_repository, csv)
    assert report["images"] == 2 and report["accuracy"] == 0.5 and report["recall"]["neutral"] == 0.0
    assert set(report["confusion"]) == {"happy", "neutral"}

    from types import SimpleNamespace

    from pipeline.modelbuild.evaluate import evaluate_cli

    settings = SimpleNamespace(model_repository=model_repository)
    assert evaluate_cli(settings, SimpleNamespace(dataset=str(csv), limit=0)) == 0
    out = capsys.readouterr().out
    assert "accuracy 0.500" in out and out.count("\n") == 4
