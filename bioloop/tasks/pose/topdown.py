"""Top-down pose: crop each animal's box to a fixed size, run the pose model, map back to the frame.

The crop mapping keeps the aspect ratio: the box (x1, y1, x2, y2) grows around its centre to the
crop's aspect ratio, giving a region of bw x bh frame pixels, and with s = Wc / bw = Hc / bh::

    x_crop = s * (x - (cx - bw / 2)) - 0.5        (likewise y)

Coordinates put pixel centres at integers (pixel (0, 0) covers [-0.5, 0.5)), so the region's left
edge lands on the crop's left edge -0.5 and its right edge on Wc - 0.5; cv2.warpAffine uses the same
convention, so ``crop_image`` and ``CropTransform`` agree exactly. Example: box (10, 20, 50, 40) and
a 64 x 64 crop give bw = bh = 40, s = 1.6, offset (-16.5, -16.5): frame (30, 30) -> crop (31.5, 31.5).
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
from torch.utils.data import Dataset

from bioloop.tasks.pose.data import IMAGENET_MEAN, IMAGENET_STD, FrameReader
from bioloop.tasks.pose.detector import animal_box, detect

__all__ = ["CropTransform", "crop_transform", "crop_image", "PoseCrops", "predict_topdown"]


@attrs.frozen
class CropTransform:
    """``crop = frame * scale + offset`` for (x, y) points; ``to_frame`` is the exact inverse."""

    scale: float
    offset: np.ndarray  # (2,) x, y

    def to_crop(self, xy) -> np.ndarray:
        return np.asarray(xy, dtype=np.float64) * self.scale + self.offset

    def to_frame(self, xy) -> np.ndarray:
        return (np.asarray(xy, dtype=np.float64) - self.offset) / self.scale

    @property
    def matrix(self) -> np.ndarray:
        """The 2 x 3 affine matrix (frame -> crop) for cv2.warpAffine."""
        s, (ox, oy) = self.scale, self.offset
        return np.array([[s, 0.0, ox], [0.0, s, oy]], dtype=np.float64)


def crop_transform(box, crop_hw) -> CropTransform:
    """The mapping of frame pixels into the ``crop_hw`` (H, W) crop of ``box`` (module docstring)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    hc, wc = (int(v) for v in crop_hw)
    bw, bh = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    if bw * hc < bh * wc:  # too narrow for the crop's aspect ratio: widen
        bw = bh * wc / hc
    else:
        bh = bw * hc / wc
    scale = wc / bw
    left, top = (x1 + x2) / 2 - bw / 2, (y1 + y2) / 2 - bh / 2
    return CropTransform(scale, np.array([-0.5 - scale * left, -0.5 - scale * top], dtype=np.float64))


def crop_image(frame: np.ndarray, box, crop_hw) -> np.ndarray:
    """The ``crop_hw`` crop of ``box`` (bilinear; outside the frame is 0), same dtype as ``frame``."""
    import cv2

    hc, wc = (int(v) for v in crop_hw)
    out = cv2.warpAffine(np.ascontiguousarray(frame), crop_transform(box, crop_hw).matrix, (wc, hc),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out[..., None] if frame.ndim == 3 and out.ndim == 2 else out


def _normalise(crops: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W), ImageNet-normalised."""
    x = (np.asarray(crops, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


class PoseCrops(Dataset):
    """One item per (labeled frame, animal with >= 2 keypoints): the animal's crop, ready for a model.

    The crop is the keypoint box grown by ``box_padding`` (``detector.animal_box``). ``ds[i]``
    (evaluation) or ``ds[(i, seed)]`` (training: box centre shifted by up to ``jitter`` of its size,
    scaled by 1 +- ``jitter``, then ``augmentation(crop, kp, rng)``, all drawn from
    ``numpy.random.default_rng(seed)``) gives ``{"image": float32 (3, Hc, Wc), "keypoints": float32
    (K, 2) crop pixels (NaN = missing or outside), "orig_hw": int64 (2,) frame size, "index": the
    frame's row, "animal": the animal, "box": float64 (4,) the cropped box in frame pixels}``;
    ``crop_transform(item["box"], crop_hw).to_frame`` maps predictions back.
    """

    def __init__(self, labels, indices=None, *, crop_hw=(256, 256), box_padding: float = 0.1,
                 augmentation=None, jitter: float = 0.1):
        self.labels = labels
        rows = np.arange(labels.num_frames) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        self.crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
        self.box_padding = float(box_padding)
        self.augmentation = augmentation
        self.jitter = float(jitter)
        self.reader = FrameReader()
        self.items = [(int(r), a) for r in rows for a in range(labels.num_animals)
                      if np.isfinite(labels.keypoints[r, a]).all(axis=1).sum() >= 2]

    def __len__(self) -> int:
        return len(self.items)

    def _frame(self, row: int) -> np.ndarray:
        lab = self.labels
        video = lab.video_paths[row] if lab.video_paths else ""
        fidx = None if lab.frame_indices is None else int(lab.frame_indices[row])
        frame = self.reader.read(lab.image_paths[row], video, fidx)
        return np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame[..., :3]

    def __getitem__(self, key):
        position, seed = key if isinstance(key, tuple) else (key, None)
        row, animal = self.items[int(position)]
        frame = self._frame(row)
        kp = np.asarray(self.labels.keypoints[row, animal], dtype=np.float64)
        box = animal_box(kp, self.box_padding, frame.shape[:2])
        if box is None:  # the keypoints lie outside the frame: crop around them anyway
            box = animal_box(kp, self.box_padding, None)
        rng = np.random.default_rng(seed) if seed is not None else None
        if rng is not None and self.jitter > 0:
            size = box[2:] - box[:2]
            centre = (box[:2] + box[2:]) / 2 + rng.uniform(-self.jitter, self.jitter, 2) * size
            half = size / 2 * rng.uniform(1 - self.jitter, 1 + self.jitter)
            box = np.concatenate([centre - half, centre + half])
        crop = crop_image(frame, box, self.crop_hw)
        kp = crop_transform(box, self.crop_hw).to_crop(kp)
        if rng is not None and self.augmentation is not None:
            crop, kp = self.augmentation(crop, kp, rng)
            kp = np.asarray(kp, dtype=np.float64).reshape(-1, 2)
        hc, wc = self.crop_hw
        outside = (kp[:, 0] < -0.5) | (kp[:, 0] > wc - 0.5) | (kp[:, 1] < -0.5) | (kp[:, 1] > hc - 0.5)
        kp[outside] = np.nan
        return {"image": torch.from_numpy(_normalise(crop)),
                "keypoints": torch.from_numpy(kp.astype(np.float32)),
                "orig_hw": torch.tensor(frame.shape[:2], dtype=torch.int64),
                "index": row, "animal": animal,
                "box": torch.from_numpy(np.asarray(box, dtype=np.float64))}


@torch.inference_mode()
def predict_topdown(detector, pose_model, decode_fn, frames, crop_hw, score_threshold: float = 0.5,
                    max_animals: int | None = None, device="cpu", *, batch_size: int = 64,
                    num_keypoints: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Detect animals in HxWx3 uint8 ``frames``, pose each crop, map back to frame pixels.

    ``decode_fn(pose_model_output) -> (keypoints (B, K, 2) crop pixels, confidence (B, K))``.
    Returns per frame ``(keypoints (n, K, 2), confidence (n, K), boxes (n, 4), scores (n,))``;
    ``num_keypoints`` sizes the empty arrays when nothing is detected anywhere.
    """
    detections = detect(detector, frames, score_threshold, max_animals)
    crops, owners = [], []
    for i, (frame, (boxes, _)) in enumerate(zip(frames, detections)):
        for box in boxes:
            crops.append(crop_image(frame, box, crop_hw))
            owners.append((i, box))
    pose_model.eval()
    kps, confs = [], []
    for first in range(0, len(crops), batch_size):
        x = torch.from_numpy(_normalise(np.stack(crops[first:first + batch_size]))).to(device)
        kp, conf = decode_fn(pose_model(x))
        kps.append(_numpy(kp))
        confs.append(_numpy(conf))
    k = kps[0].shape[1] if kps else num_keypoints
    kp_all = np.concatenate(kps) if kps else np.zeros((0, k, 2))
    conf_all = np.concatenate(confs) if confs else np.zeros((0, k))
    for j, (_, box) in enumerate(owners):
        kp_all[j] = crop_transform(box, crop_hw).to_frame(kp_all[j])
    out, j = [], 0
    for boxes, scores in detections:
        n = len(boxes)
        out.append((kp_all[j:j + n], conf_all[j:j + n], boxes, scores))
        j += n
    return out


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float64)
