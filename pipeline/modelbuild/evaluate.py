"""`callstream models eval` on labelled images: accuracy of a served model version's face path.

Runs the same artifacts Triton serves (MTCNN + mini-Xception TorchScript) in-process, so users can
measure on their data without the stack. Images where no face is detected are classified on the
whole image (datasets of pre-cropped faces, such as FER2013's 48x48 crops, are too small for the
detector) and counted separately.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.inference.analysis import Analyzer
from pipeline.inference.face_detection import face_crop
from pipeline.inference.labels import DFEW_LABELS
from pipeline.serving.evaluate import IMAGE_SUFFIXES, DatasetError, _label, load
from pipeline.settings import Settings


def canonical(label: str) -> str | None:
    """A folder or CSV label as a DFEW label; None for a known class without one (contempt)."""
    try:
        return _label(label, "label")
    except DatasetError as exc:
        raise ValueError(str(exc)) from None


def load_dataset(path: Path) -> list[tuple[Path, str]]:
    return [(p, label) for p, label in load(path) if p.suffix.lower() in IMAGE_SUFFIXES]


class FacePath:
    """The face path of one served model version: its detector and expression nets, as its manifest says."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer

    def classify(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        found = self.analyzer.detector.detect(rgb[None])
        detected = bool(found.scores[0] > 0)
        if not detected:
            # The whole image as the face: a frame-filling box, cut by the same crop code.
            h, w = rgb.shape[:2]
            found.boxes[0] = (0, 0, w, h)
            found.scores[0] = 1.0
            found.crops[0] = face_crop(rgb, found.boxes[0], replace(self.analyzer.detector.crop, margin=0.0))
        probs = self.analyzer.expressions([rgb[None]], [found])[0][0]
        return probs, detected


def evaluate(repo: Path, dataset: Path, limit: int = 0, model: str = "emotion") -> dict:
    items = load_dataset(dataset)[: limit or None]
    if not items:
        raise DatasetError(f"no labelled images found in {dataset}")
    return score(FacePath(Analyzer.load(repo, model=model)), items)


def score(face_path: FacePath, items: list[tuple[Path, str]]) -> dict:
    confusion: dict[str, Counter] = defaultdict(Counter)
    detected = correct = 0
    for path, truth in items:
        probs, found = face_path.classify(np.asarray(Image.open(path).convert("RGB")))
        pred = DFEW_LABELS[int(np.argmax(probs))]
        confusion[truth][pred] += 1
        correct += pred == truth
        detected += found
    truths = [label for label in DFEW_LABELS if label in confusion]
    recall = {label: confusion[label][label] / sum(confusion[label].values()) for label in truths}
    return {"images": len(items), "accuracy": correct / len(items), "face_detected": detected / len(items),
            "recall": recall, "mean_recall": float(np.mean(list(recall.values()))),
            "confusion": {t: dict(confusion[t]) for t in truths}}


def lines(report: dict) -> list[str]:
    out = [f"images {report['images']}  accuracy {report['accuracy']:.3f}  mean recall {report['mean_recall']:.3f}  "
           f"faces detected {report['face_detected']:.0%}"]
    header = "truth / predicted"
    out.append(f"{header:<18}" + "".join(f"{label[:7]:>8}" for label in DFEW_LABELS) + "   recall")
    for t in DFEW_LABELS:
        if t in report["confusion"]:
            row = report["confusion"][t]
            cells = "".join(f"{row.get(p, 0):>8}" for p in DFEW_LABELS)
            out.append(f"{t:<18}{cells}   {report['recall'][t]:.2f}")
    return out


def evaluate_images(analyzer: Analyzer, items: list[tuple[Path, str]], name: str) -> list[str]:
    return [f"{name}:", *lines(score(FacePath(analyzer), items))]


def evaluate_cli(settings: Settings, args: argparse.Namespace) -> int:
    report = evaluate(settings.model_repository, Path(args.dataset), args.limit, getattr(args, "model", "emotion"))
    print("\n".join(lines(report)))
    return 0
