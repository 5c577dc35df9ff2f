"""Does the fast path say what the full path says? Face tracking is judged per segment against the
detector's full search on every frame: the label stored for the segment, and whether a face was found
at all. The reference may see its own tensors (frames scaled the way the decoder used to), so a change
of the decoder's output is judged by the same figures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.model.analysis import Analyzer


@dataclass
class Agreement:
    segments: int = 0           # items with frames
    faced: int = 0              # of those, items where the full search found a face
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
        self.same_label += int((ref_found & (ref_label == fast_label) & fast_found).sum())
        self.same_face_found += int((ref_found == fast_found).sum())

    def report(self) -> dict:
        return {"segments": self.segments, "faced": self.faced,
                "label_agreement": round(self.same_label / self.faced, 4) if self.faced else None,
                "face_found_agreement": round(self.same_face_found / self.segments, 4) if self.segments else None}


def compare(calls: list[list[dict[str, np.ndarray]]], reference: Analyzer, fast: Analyzer,
            reference_calls: list[list[dict[str, np.ndarray]]] | None = None) -> dict:
    """The `emotion` model's tensors (TRACK included), call by call, through both analyzers: the
    reference on each request alone (on `reference_calls`, the same requests decoded the old way, when
    given), the fast path on a call's requests in order, each going on from the tracking state the one
    before returned, as the worker chains a call's chunks."""
    total = Agreement()
    for c, batches in enumerate(calls):
        refs = batches if reference_calls is None else reference_calls[c]
        for t, r, out in zip(batches, refs, fast.run_chained(batches), strict=True):
            if r["FRAME_MASK"].shape != t["FRAME_MASK"].shape or not np.array_equal(r["FRAME_MASK"], t["FRAME_MASK"]):
                raise ValueError("the reference requests are not the same segments")
            ref = reference.run(r["FRAMES"], r["FRAME_MASK"], r["AUDIO"], r["AUDIO_LEN"], r.get("TRACK"))
            total.add(ref, out, t["FRAME_MASK"])
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
    frames, tracks = [], []
    for v in range(views):
        base = 0.55 + 0.1 * (v % 4)
        for i in range(frames_per_view):
            canvas = np.full((h, w, 3), 40 + 10 * v, np.uint8)
            if i == frames_per_view - 2:            # the caller stepped away: no face in this frame
                frames.append(canvas)
                tracks.append(v)
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
            tracks.append(v)
    n = len(frames)
    return {"FRAMES": np.stack(frames)[:, None], "FRAME_MASK": np.ones((n, 1), bool),
            "AUDIO": np.zeros((n, 1), np.float32), "AUDIO_LEN": np.zeros((n, 1), np.int32),
            "TRACK": np.array(tracks, np.int32)[:, None]}


