"""A detected face as the expression nets take it: the crop's size, colour and margin, levelled by
the eyes where the detector gives them. Shared by every detector and by the second and later face
nets, which cut their own crops from the same boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropSpec:
    """How a face is cut for an expression net: square side in pixels, the share of the box's side
    added on each side, and colour ('gray' is ITU-R 601 luma, as OpenCV and fer use)."""
    size: int = 64
    margin: float = 0.1   # the built-in net's: FER2013's looser framing
    color: str = "gray"   # gray | rgb | bgr

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, self.size, self.size) + (() if self.color == "gray" else (3,))


DEFAULT_CROP = CropSpec()


@dataclass
class Detections:
    boxes: np.ndarray   # (N, 4) float32 x1, y1, x2, y2 in pixels; zeros where no face
    scores: np.ndarray  # (N,) float32 detection confidence; 0 where no face
    crops: np.ndarray   # (N, S, S[, 3]) uint8 face crops as the CropSpec says; zeros where no face
    eyes: np.ndarray    # (N, 4) the eyes' x, y in image order (left first); zeros where not given

    @classmethod
    def empty(cls, n: int, crop: CropSpec = CropSpec()) -> Detections:
        return cls(np.zeros((n, 4), np.float32), np.zeros(n, np.float32), np.zeros(crop.shape(n), np.uint8),
                   np.zeros((n, 4), np.float32))


def face_crop(frame: np.ndarray, box: np.ndarray, spec: CropSpec = CropSpec(),
              eyes: np.ndarray | None = None) -> np.ndarray:
    """Square crop with a margin, resized by area averaging to the spec's size, in its colour. With
    `eyes` (left x, y, right x, y), the crop is turned about the box's centre so the eyes are level, as
    the aligned faces expression nets are trained on; without, or with level eyes, it is the plain
    axis-aligned crop."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * spec.margin)
    angle = 0.0
    if eyes is not None and (eyes[2] - eyes[0]) > 0:
        angle = float(np.arctan2(eyes[3] - eyes[1], eyes[2] - eyes[0]))
    # The region that holds the turned square: side * (|cos| + |sin|), side itself when level.
    reach = side * (abs(np.cos(angle)) + abs(np.sin(angle)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(cx - reach / 2)), int(round(cy - reach / 2))
    right, bottom = int(round(cx + reach / 2)), int(round(cy + reach / 2))
    # Where the widened box leaves the frame, the nearest edge pixel stands in (edge padding) instead
    # of shrinking the face. Only the box is converted, not the whole frame.
    rows = np.clip(np.arange(top, bottom), 0, h - 1)
    cols = np.clip(np.arange(left, right), 0, w - 1)
    box_rgb = frame[rows[:, None], cols[None, :]]
    if spec.color == "gray":
        gray = box_rgb[..., 0] * 0.299 + box_rgb[..., 1] * 0.587 + box_rgb[..., 2] * 0.114
        patch = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))[None, None]
    else:
        rgb = box_rgb if spec.color == "rgb" else box_rgb[..., ::-1]
        patch = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    # Area averaging to the output's pixel density first (no aliasing), then the turn by bilinear taps.
    span = max(spec.size, int(round(spec.size * reach / max(side, 1e-6))))
    resized = F.interpolate(patch, size=(span, span), mode="area")
    if angle:
        k = spec.size / span
        cos, sin = np.cos(angle) * k, np.sin(angle) * k
        theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=torch.float32)
        grid = F.affine_grid(theta, [1, resized.shape[1], spec.size, spec.size], align_corners=False)
        resized = F.grid_sample(resized, grid, mode="bilinear", padding_mode="border", align_corners=False)
    else:
        offset = (span - spec.size) // 2
        resized = resized[:, :, offset:offset + spec.size, offset:offset + spec.size]
    out = resized[0].round().clamp(0, 255).to(torch.uint8)
    return (out[0] if spec.color == "gray" else out.permute(1, 2, 0)).numpy()
