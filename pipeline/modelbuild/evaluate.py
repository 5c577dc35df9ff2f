"""`callstream models eval`: accuracy of the served face path on a user's own labelled images.

Runs the same artifacts Triton serves (MTCNN + mini-Xception TorchScript) in-process, so users can
measure on their data without the stack. Images where no face is detected are classified on the
whole image (datasets of pre-cropped faces, such as FER2013's 48x48 crops, are too small for the
detector) and counted separately.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.inference import artifacts
from pipeline.inference.labels import DFEW_LABELS
from pipeline.settings import Settings

ALIASES = {"happiness": "happy", "sadness": "sad", "anger": "angry", "fearful": "fear", "disgusted": "disgust",
           "surprised": "surprise", "neutrality": "neutral", "contempt": None}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def canonical(label: str) -> str | None:
    key = label.strip().lower()
    mapped = ALIASES.get(key, key)
    if mapped is not None and mapped not in DFEW_LABELS:
        raise ValueError(f"unknown label {mapped!r}; expected one of {DFEW_LABELS} (or a common alias)")
    return mapped


def load_dataset(path: Path) -> list[tuple[Path, str]]:
    items: list[tuple[Path, str]] = []
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.reader(f):
                if not row or row[0].strip().lower() in ("path", "file", "image"):
                    continue
                label = canonical(row[1])
                if label:
                    p = Path(row[0])
                    items.append((p if p.is_absolute() else path.parent / p, label))
        return items
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        label = canonical(folder.name)
        if label:
            items += [(f, label) for f in sorted(folder.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    return items


class FacePath:
    def __init__(self, repo: Path) -> None:
        self.detector = artifacts.detector(artifacts.version_dir(repo, "face_detector"))
        self.expression = artifacts.expression(artifacts.version_dir(repo, "face_expression"))

    def classify(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        found = self.detector.detect(rgb[None])
        if found.scores[0] > 0:
            crop = found.crops[0]
        else:
            gray = Image.fromarray(rgb).convert("L").resize((64, 64), Image.Resampling.BILINEAR)
            crop = np.asarray(gray, np.uint8)
        with torch.inference_mode():
            return self.expression(torch.from_numpy(crop[None])).numpy()[0], bool(found.scores[0] > 0)


def evaluate(repo: Path, dataset: Path, limit: int = 0) -> dict:
    items = load_dataset(dataset)[: limit or None]
    if not items:
        raise ValueError(f"no labelled images found in {dataset}")
    model = FacePath(repo)
    confusion: dict[str, Counter] = defaultdict(Counter)
    detected = correct = 0
    for path, truth in items:
        probs, found = model.classify(np.asarray(Image.open(path).convert("RGB")))
        pred = DFEW_LABELS[int(np.argmax(probs))]
        confusion[truth][pred] += 1
        correct += pred == truth
        detected += found
    truths = [label for label in DFEW_LABELS if label in confusion]
    recall = {label: confusion[label][label] / sum(confusion[label].values()) for label in truths}
    return {"images": len(items), "accuracy": correct / len(items), "face_detected": detected / len(items),
            "recall": recall, "mean_recall": float(np.mean(list(recall.values()))),
            "confusion": {t: dict(confusion[t]) for t in truths}}


def evaluate_cli(settings: Settings, args: argparse.Namespace) -> int:
    report = evaluate(settings.model_repository, Path(args.dataset), args.limit)
    print(f"images {report['images']}  accuracy {report['accuracy']:.3f}  mean recall {report['mean_recall']:.3f}  "
          f"faces detected {report['face_detected']:.0%}")
    header = "truth / predicted"
    print(f"{header:<18}" + "".join(f"{label[:7]:>8}" for label in DFEW_LABELS) + "   recall")
    for t in DFEW_LABELS:
        if t in report["confusion"]:
            row = report["confusion"][t]
            print(f"{t:<18}" + "".join(f"{row.get(p, 0):>8}" for p in DFEW_LABELS) + f"   {report['recall'][t]:.2f}")
    return 0
