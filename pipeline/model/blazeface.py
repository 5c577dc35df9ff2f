"""BlazeFace (MediaPipe's face detector), batched over every frame of a request.

One pass of a ~0.1-GFLOP net per frame finds a face where MTCNN's cascade needed a pyramid and two
refining stages, so every sampled frame is searched and nothing is carried between frames. Decoding
follows MediaPipe's calculators for the face detection graphs: SSD anchors, boxes and six keypoints
relative to them, sigmoid scores clipped as its TfLiteTensorsToDetections does, and overlapping boxes
merged by a score-weighted mean (its weighted non-maximum suppression), of which we keep the first,
most confident, face per frame: one face per participant view is the call-center case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.model import manifest as mf
from pipeline.model.crops import DEFAULT_CROP, CropSpec, Detections, face_crop
from pipeline.model.nets import Runner

# MediaPipe's min_score_thresh for both face detection graphs is 0.5; noise and a cat's face scored
# 0.51-0.59 here, real faces 0.62 and up at the sizes the passes give them (tests/model/test_blazeface.py).
MIN_SCORE = 0.6
MIN_OVERLAP = 0.3        # its min_suppression_threshold: boxes overlapping more are one face
RAW_SCORE_LIMIT = 100.0  # its score_clipping_thresh
KEYPOINTS = 6            # eyes (image left, image right), nose tip, mouth centre, ear tragions
# The face nets' crop margins were set on MTCNN's boxes (FER2013's looser framing around them), and
# MTCNN's box of a face is larger and higher than BlazeFace's: its square side is 1.12x BlazeFace's and
# its centre 0.11 of a side higher (medians over scikit-image's LFW faces; tests/model/test_blazeface.py
# measures it again). BlazeFace's box is mapped onto that framing before any crop is cut.
BOX_SCALE = 1.12
BOX_RAISE = 0.11


@dataclass(frozen=True)
class Variant:
    """One of MediaPipe's two face detectors: the side it was trained at, the strides of its SSD head
    with the anchors per cell (face_detection_short_range_common.pbtxt, ..._full_range_common.pbtxt),
    the side an input must be a multiple of (its coarsest stride), and the range of face sides, in
    the net's pixels, it finds (measured on scikit-image's astronaut at 30-512 px: 19-142 for short
    range, 12-191 for full range; tests/model/test_blazeface.py keeps the ends)."""
    name: str
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]
    align: int
    smallest_face: int
    largest_face: int

    @property
    def file(self) -> str:
        """Its ONNX file in the detector folder, the name the manifest's [detector] checks for."""
        return mf.BLAZEFACE_FILE.format(range=self.name)

    def anchors(self, height: int | None = None, width: int | None = None) -> np.ndarray:
        """(A, 2) anchor centres in input pixels, in the order of the net's outputs, for an input of
        this size (the trained square by default): SsdAnchorsCalculator with a fixed anchor size, whose
        box offsets and sizes are in input pixels."""
        height, width = height or self.size, width or self.size
        out = []
        for stride, per_cell in zip(self.strides, self.anchors_per_cell, strict=True):
            ys, xs = np.meshgrid((np.arange(height // stride) + 0.5) * stride,
                                 (np.arange(width // stride) + 0.5) * stride, indexing="ij")
            out.append(np.repeat(np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1), per_cell, axis=0))
        return np.concatenate(out).astype(np.float32)


# Short range: faces within ~2 m (a webcam); trained at 128 px, 2 anchors per cell at stride 8 and 6 at 16.
SHORT_RANGE = Variant("short", 128, (8, 16), (2, 6), 16, 20, 128)
# Full range: faces up to ~5 m (a room camera); trained at 192 px, one anchor per cell at stride 4.
FULL_RANGE = Variant("full", 192, (4,), (1,), 32, 14, 160)
VARIANTS = {v.name: v for v in (SHORT_RANGE, FULL_RANGE)}


@dataclass(frozen=True)
class Fit:
    """How frames of one size are fed: scaled by `scale` into the input's top-left corner, the rest
    black, the input `height` x `width` (multiples of the variant's `align`)."""
    scale: float
    height: int
    width: int

    @classmethod
    def at(cls, height: int, width: int, scale: float, align: int) -> Fit:
        side = lambda n: max(align, -(-round(n * scale) // align) * align)  # noqa: E731
        return cls(scale, side(height), side(width))

    @classmethod
    def passes(cls, height: int, width: int, variant: Variant, min_face: int) -> list[Fit]:
        """The scales a frame is searched at: the first makes the smallest face asked for (`min_face`
        frame pixels) as large as the net finds; each next a quarter of the one before, while a face
        as large as the frame's shorter side would be too large for the passes so far; none smaller
        than fitting the frame into the trained side (MediaPipe's own letterbox), none above a scale
        of 1 unless the frame is smaller than that side. A webcam view of 480x270 or smaller at the
        default 40-px faces takes one pass."""
        fit = variant.size / max(height, width)
        scale = min(max(variant.smallest_face / max(min_face, 1), fit), max(fit, 1.0))
        out = [cls.at(height, width, scale, variant.align)]
        while min(height, width) * scale > variant.largest_face * 1.1 and scale > fit:
            scale = max(scale / 4, fit)
            out.append(cls.at(height, width, scale, variant.align))
        return out


def fitted(frames: np.ndarray, fit: Fit) -> np.ndarray:
    """(N, H, W, 3) uint8 frames as the net's input: scaled, black beyond, in [-1, 1], NHWC float32.
    Scaled as uint8 with antialiased bilinear taps (PyTorch's vectorised path for channels-last bytes:
    ~15x cheaper than area averaging in float; a 4x reduction without the antialias would alias)."""
    n, h, w = frames.shape[:3]
    th, tw = max(1, round(h * fit.scale)), max(1, round(w * fit.scale))
    images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)   # channels-last view
    scaled = images if (th, tw) == (h, w) else F.interpolate(images, size=(th, tw), mode="bilinear",
                                                              antialias=True, align_corners=False)
    out = torch.full((n, fit.height, fit.width, 3), -1.0)   # black, as MediaPipe's letterbox pads
    out[:, :th, :tw] = scaled.permute(0, 2, 3, 1).float() / 127.5 - 1.0
    return out.numpy()


def decode(raw: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The net's (N, A, 17) output (16 regressors, then the logit) as boxes with keypoints in input
    pixels (N, A, 2 + KEYPOINTS, 2): rows (x1, y1), (x2, y2), then the keypoints; and scores (N, A)."""
    points = raw[..., :16].reshape(raw.shape[0], raw.shape[1], 8, 2)
    centre = points[:, :, 0] + anchors
    half = points[:, :, 1] / 2
    keypoints = points[:, :, 2:] + anchors[:, None, :]
    boxes = np.concatenate([(centre - half)[:, :, None], (centre + half)[:, :, None], keypoints], axis=2)
    logits = np.clip(raw[..., 16], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT).astype(np.float64)
    return boxes.astype(np.float32), (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def best_faces(boxes: np.ndarray, scores: np.ndarray, min_score: float = MIN_SCORE,
               min_overlap: float = MIN_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the first face MediaPipe's weighted suppression returns: the most confident box,
    merged with every box above `min_score` that overlaps it by more than `min_overlap` (IoU), each
    weighted by its score; the top score stays the face's score (0: no face). Vectorised over frames."""
    n = len(boxes)
    valid = (scores > min_score) & (boxes[:, :, 1, 0] > boxes[:, :, 0, 0]) & (boxes[:, :, 1, 1] > boxes[:, :, 0, 1])
    ranked = np.where(valid, scores, -1.0)
    top = ranked.argmax(axis=1)
    top_score = ranked[np.arange(n), top]
    best = boxes[np.arange(n), top]                          # (N, 8, 2)
    x1 = np.maximum(boxes[:, :, 0, 0], best[:, None, 0, 0])
    y1 = np.maximum(boxes[:, :, 0, 1], best[:, None, 0, 1])
    x2 = np.minimum(boxes[:, :, 1, 0], best[:, None, 1, 0])
    y2 = np.minimum(boxes[:, :, 1, 1], best[:, None, 1, 1])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, :, 1, 0] - boxes[:, :, 0, 0]) * (boxes[:, :, 1, 1] - boxes[:, :, 0, 1])
    best_area = (best[:, 1, 0] - best[:, 0, 0]) * (best[:, 1, 1] - best[:, 0, 1])
    union = area + best_area[:, None] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    weight = np.where(valid & (iou > min_overlap), scores, 0.0)   # the top box counts itself (IoU 1)
    total = weight.sum(axis=1)
    merged = np.einsum("na,nakc->nkc", weight, boxes) / np.maximum(total, 1e-12)[:, None, None]
    found = top_score > 0
    return np.where(found[:, None, None], merged, 0.0).astype(np.float32), np.where(found, top_score, 0.0)


def framed(box: np.ndarray) -> np.ndarray:
    """BlazeFace's box (x1, y1, x2, y2) as the square MTCNN would have drawn around the same face."""
    side = max(box[2] - box[0], box[3] - box[1]) * BOX_SCALE
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2 - BOX_RAISE * (box[3] - box[1])
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


class BlazeFace:
    """The detector behind `kind = "blazeface"`: `net` answers (N, H, W, 3) in [-1, 1] with (N, A, 17).
    Frames are scaled so a face of `min_face` pixels is one the net finds (Fit.passes)."""

    def __init__(self, net: Runner, variant: Variant = SHORT_RANGE, min_face: int = 40,
                 crop: CropSpec = DEFAULT_CROP, min_score: float = MIN_SCORE) -> None:
        self.net, self.variant, self.min_face, self.crop = net, variant, min_face, crop
        self.min_score = min_score
        self._anchors: dict[tuple[int, int], np.ndarray] = {}

    @property
    def trusted(self) -> float:
        """Fusion's bar for a face: every face reported is one (its score is at least min_score)."""
        return self.min_score

    def empty(self, n: int) -> Detections:
        return Detections.empty(n, self.crop)

    def anchors(self, fit: Fit) -> np.ndarray:
        key = (fit.height, fit.width)
        if key not in self._anchors:
            self._anchors[key] = self.variant.anchors(*key)
        return self._anchors[key]

    def detect(self, frames: np.ndarray) -> Detections:
        """The most confident face of each frame (one size per call), with the eyes its crop is
        levelled by; of several passes, the one most confident of its face."""
        n = len(frames)
        if n == 0:
            return self.empty(0)
        h, w = frames.shape[1:3]
        points, scores = np.zeros((n, 8, 2), np.float32), np.zeros(n, np.float32)
        for fit in Fit.passes(h, w, self.variant, self.min_face):
            anchors = self.anchors(fit)
            raw = np.asarray(self.net(fitted(frames, fit)), np.float32).reshape(n, len(anchors), 17)
            faces, found = best_faces(*decode(raw, anchors), min_score=self.min_score)
            better = found > scores
            points[better], scores[better] = faces[better] / fit.scale, found[better]   # to frame pixels
        points[..., 0] = np.clip(points[..., 0], 0, w)
        points[..., 1] = np.clip(points[..., 1], 0, h)
        # A box that lies in the black beyond the frame (hostile frames) is clipped to nothing: no face.
        whole = ((points[:, 1] - points[:, 0]) >= 2).all(axis=1)
        scores = np.where(whole, scores, 0.0).astype(np.float32)
        result = self.empty(n)
        for i in np.flatnonzero(scores > 0):
            result.boxes[i] = framed(points[i, :2].reshape(4))
            result.scores[i] = scores[i]
            result.eyes[i] = points[i, 2:4].reshape(4)
            result.crops[i] = face_crop(frames[i], result.boxes[i], self.crop, result.eyes[i])
        return result
