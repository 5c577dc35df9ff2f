"""`callstream models eval` on a small labelled set of real photographs (folder per label and CSV)."""

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation import DatasetError, evaluate_images, image_items, label_of, score_images


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
    assert label_of("Happiness", "x") == "happy" and label_of("anger", "x") == "angry"
    assert label_of("contempt", "x") is None   # a known class without a DFEW column: left out
    with pytest.raises(DatasetError, match="label 'bored' is not one of"):
        label_of("bored", "x")


def test_folder_and_csv_datasets_evaluate(dataset, model_repository):
    from pipeline.model.analysis import Analyzer

    analyzer = Analyzer.load(model_repository)
    items = image_items(dataset)
    assert [label for _, label in items] == ["happy", "happy"]
    report = score_images(analyzer, items)
    assert report["images"] == 2 and report["face_detected"] == 1.0
    assert report["accuracy"] == 1.0 and report["confusion"]["happy"]["happy"] == 2
    csv = dataset / "labels.csv"
    csv.write_text("path,label\nhappiness/astronaut.png,happy\nhappiness/mirrored.jpg,neutral\n")
    report = score_images(analyzer, image_items(csv))
    assert report["images"] == 2 and report["accuracy"] == 0.5 and report["recall"]["neutral"] == 0.0
    assert set(report["confusion"]) == {"happy", "neutral"}
    lines = evaluate_images(analyzer, image_items(csv), "emotion")
    assert lines[0] == "emotion:" and "accuracy 0.500" in lines[1] and len(lines) == 5
