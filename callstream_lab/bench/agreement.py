"""Does the served detector say what MTCNN said? BlazeFace (with its levelled crops) is judged per
segment against MTCNN's full search of every frame, on the same tensors: the label stored for the
segment, whether a face was found at all, and how often each found one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.model import artifacts
from pipeline.model.analysis import Analyzer


@dataclass
class Agreement:
    segments: int = 0           # items with frames
    faced: int = 0              # of those, items where the reference found a face
    fast_faced: int = 0         # items where the served path found one
    same_label: int = 0         # faced items given the same label by both paths
    same_face_found: int = 0    # items where both paths agree whether there was a face

    def add(self, reference: dict[str, np.ndarray], fast: dict[str, np.ndarray], mask: np.ndarray) -> None:
        framed = mask.reshape(len(mask), -1).any(axis=1)
        ref_found = reference["FACE_FOUND"].reshape(-1)[framed]
        fast_found = fast["FACE_FOUND"].reshape(-1)[framed]
        ref_label = reference["PROBS"].argmax(axis=1)[framed]
        fast_label = fast["PROBS"].argmax(axis=1)[framed]
        self.segments += int(framed.sum())
        self.faced += int(ref_found.sum())
        self.fast_faced += int(fast_found.sum())
        self.same_label += int((ref_found & (ref_label == fast_label) & fast_found).sum())
        self.same_face_found += int((ref_found == fast_found).sum())

    def report(self) -> dict:
        return {"segments": self.segments, "faced": self.faced, "fast_faced": self.fast_faced,
                "label_agreement": round(self.same_label / self.faced, 4) if self.faced else None,
                "face_found_agreement": round(self.same_face_found / self.segments, 4) if self.segments else None}


def with_detector(analyzer: Analyzer, repo: Path, kind: str) -> Analyzer:
    """The analyzer with the repository's built-in detector of another kind (crops as before)."""
    folder = artifacts.version_dir(repo, "face_detector")
    analyzer.detector = artifacts.detector(folder, 40, analyzer.device, analyzer.faces[0].crop, kind)
    return analyzer


def compare(calls: list[list[dict[str, np.ndarray]]], reference: Analyzer, fast: Analyzer) -> dict:
    """The `emotion` model's tensors, request by request, through both analyzers."""
    total = Agreement()
    for batches in calls:
        for t in batches:
            args = (t["FRAMES"], t["FRAME_MASK"], t["AUDIO"], t["AUDIO_LEN"])
            total.add(reference.run(*args), fast.run(*args), t["FRAME_MASK"])
    return total.report()


def photo_views(frames_per_view: int = 10, views: int = 4, size: tuple[int, int] = (270, 240),
                seed: int = 0) -> dict[str, np.ndarray]:
    """A harder case than the generated calls: a real photograph (scikit-image's astronaut) whose
    position, scale and exposure change by more between samples than a seated caller's do, plus a
    turn away (mirrored) and a frame without the face, per view. Returned as model inputs, one item
    per frame so every frame is a segment."""
    from skimage import data, exposure, transform

    rng = np.random.default_rng(seed)
    photo = data.astronaut()[0:300, 90:370]
    h, w = size
    frames = []
    for v in range(views):
        base = 0.55 + 0.1 * (v % 4)
        for i in range(frames_per_view):
            canvas = np.full((h, w, 3), 40 + 10 * v, np.uint8)
            if i == frames_per_view - 2:            # the caller stepped away: no face in this frame
                frames.append(canvas)
                continue
            scale = base * (1 + rng.uniform(-0.08, 0.08))
            img = transform.resize(photo, (int(h * scale), int(h * scale * 280 / 300)), preserve_range=True)
            img = exposure.adjust_gamma(img / 255, rng.uniform(0.7, 1.4)) * 255
            if i == frames_per_view // 2:
                img = img[:, ::-1]
            ih, iw = img.shape[:2]
            y = int(np.clip((h - ih) // 2 + rng.integers(-12, 13), 0, h - ih))
            x = int(np.clip((w - iw) // 2 + rng.integers(-16, 17), 0, w - iw))
            canvas[y:y + ih, x:x + iw] = img.round().clip(0, 255).astype(np.uint8)
            frames.append(canvas)
    n = len(frames)
    return {"FRAMES": np.stack(frames)[:, None], "FRAME_MASK": np.ones((n, 1), bool),
            "AUDIO": np.zeros((n, 1), np.float32), "AUDIO_LEN": np.zeros((n, 1), np.int32)}




def lfw_views(faces: bool = True, size: tuple[int, int] = (270, 240), seed: int = 0) -> dict[str, np.ndarray]:
    """Other people than the astronaut: scikit-image's LFW subset (Labeled Faces in the Wild), its 100
    faces (or its 100 patches without one), 25 px upscaled to about half of a participant's view, turned
    by up to 15 degrees and moved. Blurred by the upscale, they are hard for the expression net: a move
    of 2-3 px changes the label of 15 % of them with either detector. One item per frame."""
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    patches = data.lfw_subset()[:100] if faces else data.lfw_subset()[100:]
    h, w = size
    frames = []
    for patch in patches:
        turned = transform.rotate(patch, rng.uniform(-15, 15) if faces else 0.0, mode="edge")
        side = int(h * (rng.uniform(0.45, 0.8) if faces else 0.6))
        img = transform.resize(turned, (side, side)) * 255
        canvas = np.full((h, w, 3), 50, np.uint8)
        y = int(np.clip((h - side) // 2 + rng.integers(-30, 30), 0, h - side))
        x = int(np.clip((w - side) // 2 + rng.integers(-40, 40), 0, w - side))
        canvas[y:y + side, x:x + side] = np.repeat(img.round().clip(0, 255).astype(np.uint8)[..., None], 3, 2)
        frames.append(canvas)
    n = len(frames)
    return {"FRAMES": np.stack(frames)[:, None], "FRAME_MASK": np.ones((n, 1), bool),
            "AUDIO": np.zeros((n, 1), np.float32), "AUDIO_LEN": np.zeros((n, 1), np.int32)}
