"""MTCNN's cascade (proposal, refine, output) around the three TorchScript nets, batched over frames.

Follows the reference algorithm (Zhang et al. 2016, as implemented by facenet-pytorch) so the shipped
weights behave as trained. Returns the most confident face per frame with a crop ready for the
expression net (its size, colour and margin from the manifest): one face per participant view is the
call-center case.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.model.crops import DEFAULT_CROP, CropSpec, Detections, face_crop
from pipeline.shared.fusion import FACE_MIN_SCORE

THRESHOLDS = (0.6, 0.7, 0.7)
PROPOSALS_PER_IMAGE = 16   # stage-1 candidates refined per frame
REFINED_PER_IMAGE = 2      # stage-2 candidates checked by the output stage per frame
SCALE_FACTOR = 0.709
def pyramid_scales(height: int, width: int, min_face: int) -> list[float]:
    scale = 12.0 / min_face
    side = min(height, width) * scale
    scales: list[float] = []
    while side >= 12:
        scales.append(scale * SCALE_FACTOR ** len(scales))
        side *= SCALE_FACTOR
    return scales


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression; 'min' divides by the smaller area as MTCNN's last stage does.
    Overlaps are computed once as a matrix, so the greedy pass is a cheap walk over boolean rows."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    order = scores.argsort(descending=True)
    b = boxes[order]
    x1, y1, x2, y2 = b.unbind(1)
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = (torch.minimum(x2[:, None], x2[None]) - torch.maximum(x1[:, None], x1[None]) + 1).clamp(min=0)
    h = (torch.minimum(y2[:, None], y2[None]) - torch.maximum(y1[:, None], y1[None]) + 1).clamp(min=0)
    inter = w * h
    denom = torch.minimum(area[:, None], area[None]) if mode == "min" else area[:, None] + area[None] - inter
    overlaps = (inter / denom > threshold).numpy()
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def top_per_image(scores: torch.Tensor, image_inds: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k best-scoring candidates of each image. We return one face per frame, so
    candidates ranked below the first few cannot become the answer; dropping them early saves the
    refine and output stages most of their work."""
    if scores.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    order = scores.argsort(descending=True)
    order = order[torch.argsort(image_inds[order], stable=True)]
    _, counts = torch.unique_consecutive(image_inds[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(len(order)) - starts
    return order[rank < k]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float,
                mode: str = "union") -> torch.Tensor:
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    # Offset each image's boxes so boxes of different images never overlap.
    offset = groups.to(boxes.dtype)[:, None] * (boxes.max() + 1)
    return nms(boxes + offset, scores, threshold, mode)


def _square(boxes: torch.Tensor) -> torch.Tensor:
    boxes = boxes.clone()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _crop_resize(frames: np.ndarray, boxes: torch.Tensor, image_inds: torch.Tensor | np.ndarray,
                 size: int) -> torch.Tensor:
    """Crop box i of frame image_inds[i] (clamped to the frame) and resize with area interpolation, as
    the reference does; only the crop is converted to float."""
    _, h, w = frames.shape[:3]
    crops = []
    for box, idx in zip(boxes.int().tolist(), np.asarray(image_inds).tolist(), strict=True):
        x1, y1, x2, y2 = max(box[0], 1), max(box[1], 1), min(box[2], w), min(box[3], h)
        if x2 <= x1 - 1 or y2 <= y1 - 1:
            crops.append(torch.zeros(1, 3, size, size))
            continue
        patch = torch.from_numpy(np.ascontiguousarray(frames[idx, y1 - 1:y2, x1 - 1:x2])).permute(2, 0, 1)[None]
        crops.append(F.interpolate(patch.float(), size=(size, size), mode="area"))
    return torch.cat(crops) if crops else torch.zeros(0, 3, size, size)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


class MTCNN:
    def __init__(self, pnet: torch.jit.ScriptModule, rnet: torch.jit.ScriptModule,
                 onet: torch.jit.ScriptModule, min_face: int = 40, device: str = "cpu",
                 crop: CropSpec = DEFAULT_CROP) -> None:
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.min_face = min_face
        self.device = device
        self.crop = crop   # the first expression net's: its crops come with the detections
        self.trusted = FACE_MIN_SCORE   # its output stage passes faces from 0.7; fusion trusts them from this

    def empty(self, n: int) -> Detections:
        return Detections.empty(n, self.crop)

    def detect(self, frames: np.ndarray) -> Detections:
        """The most confident face of each frame (MTCNN gives no eyes: its crops are not levelled)."""
        return self.search(frames)

    @torch.inference_mode()
    def search(self, frames: np.ndarray) -> Detections:
        """The full cascade on every frame."""
        n, h, w = frames.shape[:3]
        empty = self.empty(n)
        if n == 0:
            return empty
        # Contiguous planes: area resampling is ~25 % cheaper on them than on a permuted view (same values).
        with warnings.catch_warnings():
            # Read-only frames (a decoded buffer) are never written through: .float() copies them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            images = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().contiguous()

        # Stage 1: proposals over an image pyramid.
        all_boxes, all_inds = [], []
        for scale in pyramid_scales(h, w, self.min_face):
            scaled = F.interpolate(images, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            reg, probs = self.pnet(_normalise(scaled))
            mask = probs[:, 1] >= THRESHOLDS[0]
            idx = mask.nonzero()
            if idx.numel() == 0:
                continue
            score = probs[:, 1][mask]
            r = reg.permute(1, 0, 2, 3)[:, mask].permute(1, 0)
            cell = idx[:, 1:].to(reg.dtype).flip(1)  # (x, y) of the 12x12 cell, stride 2
            q1 = ((2 * cell + 1) / scale).floor()
            q2 = ((2 * cell + 12) / scale).floor()
            boxes = torch.cat([q1, q2, score[:, None], r], dim=1)
            keep = batched_nms(boxes[:, :4], boxes[:, 4], idx[:, 0], 0.5)
            all_boxes.append(boxes[keep])
            all_inds.append(idx[keep, 0])
        if not all_boxes:
            return empty
        boxes, inds = torch.cat(all_boxes), torch.cat(all_inds)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds = boxes[keep], inds[keep]
        best = top_per_image(boxes[:, 4], inds, PROPOSALS_PER_IMAGE)
        boxes, inds = boxes[best], inds[best]
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                             boxes[:, 4]], dim=1)
        return self._refine_and_output(frames, _square(boxes).trunc()[:, :4], inds)

    def _refine_and_output(self, frames: np.ndarray, boxes: torch.Tensor, inds: torch.Tensor) -> Detections:
        """The cascade's stages 2 and 3 on the proposal stage's square candidates (x1, y1, x2, y2) of
        the frames `inds` name: the most confident face per frame, or none."""
        n = len(frames)
        empty = self.empty(n)
        if boxes.numel() == 0:
            return empty

        # Stage 2: refine.
        reg, probs = self.rnet(_normalise(_crop_resize(frames, boxes, inds.cpu(), 24).to(self.device)))
        passed = probs[:, 1] > THRESHOLDS[1]
        boxes = torch.cat([boxes[passed, :4], probs[passed, 1:2]], dim=1)
        inds, reg = inds[passed], reg[passed]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds, reg = boxes[keep], inds[keep], reg[keep]
        if boxes.numel() == 0:
            return empty
        best = top_per_image(boxes[:, 4], inds, REFINED_PER_IMAGE)
        boxes, inds, reg = boxes[best], inds[best], reg[best]
        boxes = _square(_regress(boxes, reg)).trunc()

        # Stage 3: output.
        crops = _crop_resize(frames, boxes, inds.cpu(), 48).to(self.device)
        reg, _landmarks, probs = self.onet(_normalise(crops))
        passed = probs[:, 1] > THRESHOLDS[2]
        boxes = torch.cat([boxes[passed, :4], probs[passed, 1:2]], dim=1)
        inds, reg = inds[passed], reg[passed]
        if boxes.numel() == 0:
            return empty
        boxes = _regress(boxes, reg)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7, mode="min")
        boxes, inds = boxes[keep].cpu(), inds[keep].cpu()

        result = empty
        for i in range(n):
            mine = (inds == i).nonzero().flatten()
            if mine.numel() == 0:
                continue
            best = boxes[mine[boxes[mine, 4].argmax()]]
            result.boxes[i] = best[:4].numpy()
            result.scores[i] = float(best[4])
            result.crops[i] = face_crop(frames[i], best[:4].numpy(), self.crop)
        return result
