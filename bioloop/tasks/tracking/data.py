"""Tracking clips as a torch Dataset: instance crops, boxes, times and track ids per clip.

Crop geometry (the same in training and inference, see ``crop_window``): the crop of an
instance is ``crop_size + 2 * padding`` pixels per side (the reference pads the crop box by
``padding`` on each side and does not resize), cut straight from the frame without
interpolation. Its anchor, rounded to the nearest pixel, lands at crop pixel ``[h // 2, w // 2]``;
pixels outside the frame are 0. Several anchors give one crop each, stacked as channels
(anchor-major: channels ``[a * C, (a + 1) * C)`` belong to anchor a), so ``in_chans = C * len(anchors)``.
A missing (NaN) anchor node falls back to the instance's centroid.

Frames become float32 HxWxC in [0, 1] (``frame_to_hwc`` then ``normalise_frame``): uint8 is divided
by 255, other types by the frame's maximum when it exceeds 1; 3D (Z, H, W) frames are replaced
by their maximum projection over z. Boxes are normalised by the frame size with pixel edges:
``((x0 + 0.5) / W, (y0 + 0.5) / H, (x1 + 0.5) / W, (y1 + 0.5) / H)`` clipped to [0, 1], so the
whole frame is (0, 0, 1, 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.augment import ClipAugmentation, build_clip_augmentation
from bioloop.tasks.tracking.types import Instances, TrackSequence

__all__ = ["TrackingClips", "collate", "crop_instances", "crop_window", "frame_to_hwc", "make_clips",
           "normalise_boxes", "normalise_frame", "split_batch"]

_PER_INSTANCE = ("crops", "boxes", "times", "ids", "frames", "centroids")


def make_clips(sequences: Sequence[TrackSequence] | Sequence[int], clip_length: int, chunk: bool = True,
               n_chunks: float | int = 1.0, seed: int | None = None) -> list[tuple[int, int, int]]:
    """``(sequence_index, start, stop)`` clips (stop exclusive).

    ``chunk``: consecutive non-overlapping clips of ``clip_length`` frames, the last partial clip
    kept when it has >= 2 frames; otherwise one clip per (non-empty) sequence. ``n_chunks``: a
    float in (0, 1] keeps that fraction (rounded, at least 1), an int that many clips (at most
    all); the subsample is drawn from ``default_rng(seed)`` (None -> 0) and returned sorted.
    ``sequences`` may be TrackSequences or their lengths.
    """
    lengths = [int(s) if isinstance(s, (int, np.integer)) else len(s) for s in sequences]
    clips = []
    for i, n in enumerate(lengths):
        if not chunk:
            clips += [(i, 0, n)] if n > 0 else []
            continue
        for start in range(0, n, int(clip_length)):
            stop = min(start + int(clip_length), n)
            if stop - start >= 2:
                clips.append((i, start, stop))
    total = len(clips)
    if isinstance(n_chunks, bool) or not isinstance(n_chunks, (int, float, np.integer, np.floating)) \
            or n_chunks <= 0 or (isinstance(n_chunks, (float, np.floating)) and n_chunks > 1):
        raise ConfigError.at("n_chunks", "must be a fraction in (0, 1] or a whole number of clips", got=n_chunks)
    count = max(1, round(float(n_chunks) * total)) if isinstance(n_chunks, (float, np.floating)) \
        else min(int(n_chunks), total)
    if count >= total:
        return clips
    keep = np.sort(np.random.default_rng(0 if seed is None else seed).choice(total, count, replace=False))
    return [clips[k] for k in keep]


def crop_window(crop_size: int | Sequence[int], padding: int = 0, where: str = "dataset") -> tuple[int, int]:
    """The (h, w) of every crop: ``crop_size`` (int or (height, width)) plus ``padding`` on each side."""
    size = (crop_size, crop_size) if isinstance(crop_size, (int, np.integer)) else tuple(crop_size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size):
        raise ConfigError.at(f"{where}.crop_size", "must be a whole number >= 1 or (height, width)", got=crop_size)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ConfigError.at(f"{where}.padding", "must be a whole number >= 0", got=padding)
    return int(size[0]) + 2 * int(padding), int(size[1]) + 2 * int(padding)


def crop_instances(frame: np.ndarray, centers: np.ndarray, crop_hw: int | Sequence[int],
                   padding: int = 0) -> np.ndarray:
    """``(n, C * A, h, w)`` crops of an (H, W) or (H, W, C) frame around ``centers`` (n, 2) or (n, A, 2).

    ``h, w = crop_window(crop_hw, padding)``; the centre pixel round(x, y) lands at ``[h // 2, w // 2]``;
    outside the frame (and for non-finite centres) the crop is 0. Same dtype as the frame.
    """
    img = frame[..., None] if frame.ndim == 2 else frame
    H, W, C = img.shape
    h, w = crop_window(crop_hw, padding)
    c = np.asarray(centers, dtype=np.float64)
    c = c[:, None] if c.ndim == 2 else c
    n, a = c.shape[:2]
    finite = np.isfinite(c).all(-1)
    c = np.where(finite[..., None], c, -1e9)  # far outside: an all-zero crop
    cx, cy = (np.floor(c[..., k] + 0.5).astype(np.int64) for k in (0, 1))
    # zero-pad by a whole window so any clipped window start lies fully inside or fully in the padding
    padded = np.pad(img, ((h, h), (w, w), (0, 0)))
    top = np.clip(cy - h // 2 + h, 0, H + h)
    left = np.clip(cx - w // 2 + w, 0, W + w)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(0, 1))  # (., ., C, h, w)
    return np.ascontiguousarray(windows[top, left].reshape(n, a * C, h, w))


def frame_to_hwc(frame: np.ndarray, ndim: int = 2, channels: int | None = None) -> np.ndarray:
    """An (H, W, C) view of a frame: (H, W) gains C = 1; 3D (Z, H, W[, C]) becomes its max over z.

    ``channels=3`` replicates a grey frame, ``channels=1`` averages an RGB frame; None keeps C.
    """
    arr = np.asarray(frame)
    if ndim == 3:
        if arr.ndim not in (3, 4):
            raise DataError.at("frame", "a 3D frame must be (Z, H, W) or (Z, H, W, C)", got=arr.shape)
        arr = arr.max(axis=0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DataError.at("frame", "a frame must be (H, W) or (H, W, C)", got=arr.shape)
    if channels is None or arr.shape[2] == channels:
        return arr
    if channels == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if channels == 1 and arr.shape[2] in (3, 4):
        return arr[..., :3].mean(axis=2, keepdims=True, dtype=np.float32)
    raise DataError.at("frame", f"cannot turn {arr.shape[2]} channels into {channels}", got=arr.shape,
                       fix="use channels=None to keep the frame's channels")


def normalise_frame(frame: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]: uint8 / 255; other types / the frame's maximum when it exceeds 1."""
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / np.float32(255)
    out = frame.astype(np.float32)
    top = float(out.max()) if out.size else 0.0
    if top > 1:
        out /= np.float32(top)
    return np.clip(out, 0, 1, out=out)


def normalise_boxes(boxes: np.ndarray, image_hw: Sequence[int]) -> np.ndarray:
    """(n, 4) pixel-edge boxes -> float32 fractions of the frame (the whole frame is (0, 0, 1, 1))."""
    H, W = image_hw
    scale = np.array([W, H, W, H], dtype=np.float64)
    return np.clip((np.asarray(boxes, dtype=np.float64) + 0.5) / scale, 0, 1).astype(np.float32)


class TrackingClips(Dataset):
    """One item per clip of ``make_clips``: crops and metadata of every instance, frame-major.

    Item: ``crops`` float32 (N, C * A, h, w) in [0, 1]; ``boxes`` float32 (N, 4) (normalise_boxes);
    ``times`` int64 (N,) frame offset in the clip (frame - start); ``ids`` int64 (N,) track ids;
    ``frames`` int64 (N,) absolute frame index; ``centroids`` float32 (N, 2) frame pixels (after
    augmentation); ``sequence`` int; ``start`` int (the clip's first frame); ``image_hw`` (H, W).
    ``train=True``: keys are ``(index, seed)`` (a plain int uses seed = index) and augmentation,
    NodeDropout and InstanceDropout are drawn from ``default_rng(seed)``; otherwise keys are ints
    and items are deterministic. Frames with more than ``max_objects`` instances are skipped.
    Without an albumentations pixel transform (prediction, validation, most training) each frame is
    read, cropped in its own dtype and dropped, so an item never holds the clip at full resolution
    (32 frames of 2048x2048 RGB: 82 MiB peak instead of 3120, docs/benchmarks.md); a pixel transform
    needs every frame of the clip at once (float32) to move them identically.
    ``settings``: a DatasetSettings (or dict) with crop_size, padding, anchors, augmentations,
    max_objects, mode. ``node_names`` overrides each sequence's own node names.
    """

    def __init__(self, sequences: Sequence[TrackSequence], clips: Sequence[tuple[int, int, int]], settings: Any,
                 node_names: Sequence[str] | None = None, train: bool = False, *, channels: int | None = None,
                 where: str | None = None):
        self.settings = SimpleNamespace(**settings) if isinstance(settings, dict) else settings
        self.sequences = list(sequences)
        self.clips = [(int(s), int(a), int(b)) for s, a, b in clips]
        self.train = bool(train)
        self.channels = channels
        mode = getattr(self.settings, "mode", "train" if train else "val")
        self.where = where or f"dataset.{mode}_dataset"
        self.window = crop_window(getattr(self.settings, "crop_size", 128), getattr(self.settings, "padding", 0),
                                  self.where)
        self.max_objects = getattr(self.settings, "max_objects", None)
        anchors = getattr(self.settings, "anchors", "centroid")
        self.anchors = [anchors] if isinstance(anchors, str) else list(anchors)
        if not self.anchors:
            raise ConfigError.at(f"{self.where}.anchors", "needs at least one anchor", got=anchors,
                                 fix="use 'centroid', a node name or a list of node names")
        self.node_names = None if node_names is None else [str(n) for n in node_names]
        self._anchor_index = [self._resolve(seq) for seq in self.sequences]
        spec = getattr(self.settings, "augmentations", None) if train else None
        self.augmentation: ClipAugmentation = build_clip_augmentation(spec, f"{self.where}.augmentations")
        self._chans: dict[int, int] = {}
        self._sizes: dict[int, tuple[int, int]] = {}

    def _resolve(self, seq: TrackSequence) -> np.ndarray:
        """Node index of each anchor in ``seq`` (-1 = the centroid)."""
        names = self.node_names if self.node_names is not None else [str(n) for n in seq.node_names]
        index = []
        for anchor in self.anchors:
            if anchor == "centroid":
                index.append(-1)
            elif anchor in names:
                index.append(names.index(anchor))
            else:
                raise ConfigError.at(f"{self.where}.anchors", f"'{anchor}' is not a node of {seq.name or 'the data'}"
                                     f"{did_you_mean(anchor, ['centroid', *names])}", got=self.anchors,
                                     fix=f"use 'centroid' or one of: {', '.join(names)}")
        return np.asarray(index, dtype=np.int64)

    @property
    def crop_hw(self) -> tuple[int, int]:
        return self.window

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key) -> dict[str, Any]:
        index, seed = (int(key[0]), key[1]) if isinstance(key, (tuple, list)) else (int(key), None)
        seq_i, start, stop = self.clips[index]
        seq = self.sequences[seq_i]
        rng = np.random.default_rng(index if seed is None else int(seed)) if self.train else None
        aug = self.augmentation
        frames, groups = [], []
        for t in range(start, stop):
            inst = seq.frames[t]
            if not len(inst) or (self.max_objects is not None and len(inst) > self.max_objects):
                continue
            keep = aug.instance_dropout(len(inst), rng) if aug.instance_dropout is not None else \
                np.ones(len(inst), dtype=bool)
            if keep.any():
                frames.append(t)
                groups.append((inst, keep))
        points, boxes, ids, frame_of = _gather(groups)
        if aug.node_dropout is not None:
            points = aug.node_dropout(points, rng)
        centroids = Instances(0, points, boxes, ids).centroids if len(boxes) else np.zeros((0, 2))
        anchor_index = self._anchor_index[seq_i]
        if not (rng is not None and aug.transform is not None):  # frame by frame: never the whole clip
            hw = self._hw(seq_i, seq, frames[0]) if frames else _frame_hw(seq)
            if rng is not None:  # no pixel transform: points leaving the frame, box clipping, the rng stream
                _, points, centroids, boxes = _augment(aug, None, points, centroids, boxes, rng, hw)
            crops, hw = self._streamed_crops(seq, frames, frame_of, points, centroids, anchor_index, hw)
            if len(frames):
                self._chans[seq_i] = crops.shape[1] // len(anchor_index)
            else:
                crops = np.zeros((0, self._channels(seq_i, seq, start) * len(anchor_index), *self.window),
                                 np.float32)
            return self._item(crops, boxes, frame_of, start, ids, centroids, seq_i, hw)
        images = [normalise_frame(frame_to_hwc(seq.read_frame(t), seq.ndim, self.channels)) for t in frames]
        images = np.stack(images) if images else np.zeros((0, 1, 1, self._channels(seq_i, seq, start)), np.float32)
        hw = images.shape[1:3] if len(frames) else _frame_hw(seq)
        images, points, centroids, boxes = _augment(aug, images, points, centroids, boxes, rng, hw)
        hw = images.shape[1:3] if len(frames) else hw
        if rng is not None and aug.transform is not None:  # instances moved out of the frame are gone
            H, W = hw
            inside = np.isfinite(centroids).all(1) & (centroids[:, 0] >= -0.5) & (centroids[:, 0] < W - 0.5) & \
                (centroids[:, 1] >= -0.5) & (centroids[:, 1] < H - 0.5)
            points, boxes, ids, frame_of, centroids = (a[inside] for a in (points, boxes, ids, frame_of, centroids))
        crops = self._crops(images, frames, frame_of, points, centroids, anchor_index)
        if len(frames):
            self._chans[seq_i] = images.shape[3]
        return self._item(crops, boxes, frame_of, start, ids, centroids, seq_i, hw)

    @staticmethod
    def _item(crops, boxes, frame_of, start, ids, centroids, seq_i, hw) -> dict[str, Any]:
        return {
            "crops": torch.from_numpy(crops),
            "boxes": torch.from_numpy(normalise_boxes(boxes, hw)),
            "times": torch.from_numpy((frame_of - start).astype(np.int64)),
            "ids": torch.from_numpy(ids.astype(np.int64)),
            "frames": torch.from_numpy(frame_of.astype(np.int64)),
            "centroids": torch.from_numpy(centroids.astype(np.float32)),
            "sequence": seq_i,
            "start": start,
            "image_hw": (int(hw[0]), int(hw[1])),
        }

    def _hw(self, seq_i: int, seq: TrackSequence, t: int) -> tuple[int, int]:
        """(H, W) of a sequence's frames, from the first frame read (cached)."""
        if seq_i not in self._sizes:
            self._sizes[seq_i] = tuple(int(v) for v in frame_to_hwc(seq.read_frame(t), seq.ndim).shape[:2])
        return self._sizes[seq_i]

    def _streamed_crops(self, seq, frames, frame_of, points, centroids, anchor_index, hw):
        """Crops read one frame at a time (the frame is cropped in its own dtype, then only the crops are
        scaled like ``normalise_frame``: the same numbers, without a float copy of the clip)."""
        h, w = self.window
        if not len(frame_of):
            return np.zeros((0, 0, h, w), np.float32), tuple(int(v) for v in hw)
        centers = _centers(points, centroids, anchor_index)
        out = None
        for t in frames:
            raw = frame_to_hwc(seq.read_frame(t), seq.ndim, self.channels)
            hw = raw.shape[:2]
            if out is None:
                out = np.zeros((len(frame_of), raw.shape[2] * len(anchor_index), h, w), dtype=np.float32)
            sel = frame_of == t
            if not sel.any():
                continue
            crops = crop_instances(raw, centers[sel], (h, w), 0)
            if raw.dtype == np.uint8:
                out[sel] = crops.astype(np.float32) / np.float32(255)
            else:
                top = float(raw.max()) if raw.size else 0.0
                part = crops.astype(np.float32)
                if top > 1:
                    part /= np.float32(top)
                out[sel] = np.clip(part, 0, 1, out=part)
        return (out if out is not None else np.zeros((0, 0, h, w), np.float32)), tuple(int(v) for v in hw)

    def _crops(self, images, frames, frame_of, points, centroids, anchor_index) -> np.ndarray:
        """Crops of every instance from its (augmented) frame, frame-major."""
        h, w = self.window
        C = images.shape[3]
        out = np.zeros((len(frame_of), C * len(anchor_index), h, w), dtype=np.float32)
        if not len(frame_of):
            return out
        centers = _centers(points, centroids, anchor_index)
        for k, t in enumerate(frames):
            sel = frame_of == t
            if sel.any():
                out[sel] = crop_instances(images[k], centers[sel], (h, w), 0)
        return out

    def _channels(self, seq_i: int, seq: TrackSequence, t: int) -> int:
        """Channels of a sequence's frames (read once) for clips with no instance."""
        if seq_i not in self._chans:
            self._chans[seq_i] = frame_to_hwc(seq.read_frame(t), seq.ndim, self.channels).shape[2]
        return self._chans[seq_i]


def _centers(points, centroids, anchor_index) -> np.ndarray:
    """(N, A, 2) crop centres: each named anchor node, the centroid where it is missing (or asked for)."""
    centers = np.repeat(centroids[:, None], len(anchor_index), axis=1)  # (N, A, 2)
    named = anchor_index >= 0
    if named.any():
        nodes = points[:, anchor_index[named]]  # (N, A', 2)
        ok = np.isfinite(nodes).all(-1, keepdims=True)
        centers[:, named] = np.where(ok, nodes, centers[:, named])
    return centers


def _frame_hw(seq: TrackSequence) -> tuple[int, int]:
    if seq.image_hw is not None:
        return tuple(int(v) for v in seq.image_hw)
    return frame_to_hwc(seq.read_frame(0), seq.ndim).shape[:2]


def _gather(groups):
    """Concatenate the kept instances of each frame: points (N, P, 2), boxes, ids, frame index."""
    if not groups:
        return np.zeros((0, 0, 2)), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    P = max(g.points.shape[1] if g.points.ndim == 3 else 0 for g, _ in groups)
    points, boxes, ids, frame_of = [], [], [], []
    for inst, keep in groups:
        pts = inst.points if inst.points.ndim == 3 and inst.points.shape[1] == P else \
            np.full((len(inst), P, 2), np.nan)
        points.append(pts[keep])
        boxes.append(inst.boxes[keep])
        ids.append(inst.track_ids[keep])
        frame_of.append(np.full(int(keep.sum()), inst.frame, dtype=np.int64))
    return np.concatenate(points), np.concatenate(boxes), np.concatenate(ids), np.concatenate(frame_of)


def _augment(aug: ClipAugmentation, images, points, centroids, boxes, rng, hw):
    """Move the frames, points, centroids and box corners with one albumentations draw.

    ``images=None`` (no pixel transform): only the rng draw and the frame-edge handling of points and
    boxes, for a frame of size ``hw``."""
    n, P = points.shape[:2]
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x0, y1], -1),
                        np.stack([x1, y1], -1)], axis=1)  # (n, 4, 2)
    flat = np.concatenate([points.reshape(-1, 2), centroids, corners.reshape(-1, 2)])
    if images is None:
        _, moved = aug.images(np.zeros((0, 1, 1, 1), np.float32), flat, rng)
        H, W = hw
    else:
        images, moved = aug.images(images, flat, rng)
        images = np.clip(images, 0, 1).astype(np.float32, copy=False)
        H, W = images.shape[1:3] if len(images) else hw
    points = moved[: n * P].reshape(n, P, 2)
    centroids = moved[n * P: n * P + n]
    corners = moved[n * P + n:].reshape(n, 4, 2)
    outside = (points[..., 0] < -0.5) | (points[..., 0] >= W - 0.5) | (points[..., 1] < -0.5) | \
        (points[..., 1] >= H - 0.5)
    points[outside] = np.nan
    lo, hi = corners.min(1), corners.max(1)
    limit = np.array([W - 0.5, H - 0.5])
    boxes = np.concatenate([np.clip(lo, -0.5, limit), np.clip(hi, -0.5, limit)], axis=1)
    return images, points, centroids, boxes


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate clips: per-instance tensors are joined (N_total, ...), ``clip`` (N_total,) says
    which clip each instance belongs to; ``sequence``, ``start``, ``counts`` (instances per clip)
    are int64 (B,), ``image_hw`` int64 (B, 2). ``split_batch`` undoes it (the model runs per clip).
    """
    out = {key: torch.cat([it[key] for it in items]) for key in _PER_INSTANCE}
    counts = torch.tensor([len(it["ids"]) for it in items], dtype=torch.int64)
    out["clip"] = torch.repeat_interleave(torch.arange(len(items), dtype=torch.int64), counts)
    out["counts"] = counts
    out["sequence"] = torch.tensor([int(it["sequence"]) for it in items], dtype=torch.int64)
    out["start"] = torch.tensor([int(it["start"]) for it in items], dtype=torch.int64)
    out["image_hw"] = torch.tensor([tuple(it["image_hw"]) for it in items], dtype=torch.int64).reshape(-1, 2)
    return out


def split_batch(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The clips of a collated batch, each as an item dict (tensors are views)."""
    bounds = np.concatenate([[0], np.cumsum(batch["counts"].tolist())]).astype(int)
    clips = []
    for b in range(len(batch["counts"])):
        part = {key: batch[key][bounds[b]: bounds[b + 1]] for key in _PER_INSTANCE}
        part.update(sequence=int(batch["sequence"][b]), start=int(batch["start"][b]),
                    image_hw=tuple(int(v) for v in batch["image_hw"][b]))
        clips.append(part)
    return clips
