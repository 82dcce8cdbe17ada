"""The animal detector of top-down pose: keypoint boxes, torchvision detectors, training through the engine.

Boxes are ``(x1, y1, x2, y2)`` in the pose package's pixel convention (pixel centres at integers,
so an H x W frame spans [-0.5, W - 0.5] x [-0.5, H - 0.5]); torchvision counts from pixel edges
(pixel 0 covers [0, 1)), so boxes are shifted by 0.5 on the way in and out.

``train_detector`` trains through the shared engine (``detector_task``): ``detector-{epoch:03d}.pt``
snapshots are engine checkpoints whose ``extras`` say ``{"kind": "detector", "variant", "min_size",
"max_size"}``; ``detector_best.pth`` holds the best validation box recall.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from bioloop.config.structure import did_you_mean
from bioloop.errors import CheckpointError, ConfigError
from bioloop.tasks.pose.config import DETECTORS

__all__ = ["animal_box", "boxes_from_keypoints", "build_detector", "train_detector", "load_detector",
           "detect", "box_recall", "snapshot_paths"]

_SNAPSHOT = re.compile(r"^detector-(\d{3,})\.pt$")
_CLASS_HEADS = ("roi_heads.box_predictor.", "head.classification_head.")  # depend on num_classes


# ---------------------------------------------------------------------------- boxes

def animal_box(keypoints, padding: float, image_hw, *, min_size: float = 4.0,
               min_keypoints: int = 2) -> np.ndarray | None:
    """The box (4,) around one animal's (K, 2) keypoints, or None with < ``min_keypoints`` labeled.

    The keypoints' extent grows by ``padding`` times its size on each side, then to at least
    ``min_size`` pixels around its centre, and is clipped to the ``image_hw`` (H, W) frame (None: not
    clipped); None if under 1 pixel is left.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    kp = kp[np.isfinite(kp).all(axis=1)]
    if len(kp) < max(1, min_keypoints):
        return None
    lo, hi = kp.min(axis=0), kp.max(axis=0)
    size = hi - lo
    lo, hi = lo - padding * size, hi + padding * size
    centre, half = (lo + hi) / 2, np.maximum(hi - lo, min_size) / 2
    lo, hi = centre - half, centre + half
    if image_hw is not None:
        upper = np.array([image_hw[1], image_hw[0]], dtype=np.float64) - 0.5
        lo, hi = np.clip(lo, -0.5, upper), np.clip(hi, -0.5, upper)
    if np.any(hi - lo < 1.0):
        return None
    return np.concatenate([lo, hi])


def boxes_from_keypoints(keypoints, padding: float, image_hw, *, min_size: float = 4.0,
                         min_keypoints: int = 2) -> list[np.ndarray]:
    """Per frame of (N, A, K, 2) keypoints, the (n_i, 4) boxes of its animals with enough keypoints.

    ``image_hw`` is one (H, W) for every frame, a list of N sizes, or None (no clipping).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    sizes = [image_hw] * len(kp) if image_hw is None or np.ndim(image_hw) == 1 else list(image_hw)
    out = []
    for frame, hw in zip(kp, sizes):
        boxes = [animal_box(a, padding, hw, min_size=min_size, min_keypoints=min_keypoints) for a in frame]
        boxes = [b for b in boxes if b is not None]
        out.append(np.stack(boxes) if boxes else np.zeros((0, 4)))
    return out


# ---------------------------------------------------------------------------- models

def build_detector(variant: str, pretrained: bool | str = False, num_classes: int = 2, *,
                   where: str = "detector", min_size: int | None = None,
                   max_size: int | None = None) -> torch.nn.Module:
    """A torchvision detector with ``num_classes`` (background included); nothing is downloaded.

    FasterRCNN variants resize frames so the short side is ``min_size`` (the long one at most
    ``max_size``); pass the frame's sides so small frames are not upscaled to 800 pixels.
    """
    from torchvision.models import detection

    if variant not in DETECTORS:
        raise ConfigError.at(f"{where}.variant", f"unknown detector{did_you_mean(variant, DETECTORS)}",
                             got=variant, fix=f"use one of {', '.join(DETECTORS)}")
    if pretrained is True:
        raise ConfigError.at(f"{where}.pretrained", f"pretrained=True would download {variant} weights, "
                             "and bioloop works offline", got=True,
                             fix="download the weights file once yourself and set pretrained to its path, "
                             "or set pretrained=False to train from scratch")
    if pretrained not in (False, None) and not isinstance(pretrained, (str, Path)):
        raise ConfigError.at(f"{where}.pretrained", "pretrained must be False or a local weights file",
                             got=pretrained, fix="e.g. pretrained='/models/fasterrcnn.pth'")
    kwargs = {}
    if variant.startswith("fasterrcnn"):
        kwargs = {k: int(v) for k, v in (("min_size", min_size), ("max_size", max_size)) if v is not None}
    model = getattr(detection, variant)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if pretrained not in (False, None):
        _load_pretrained(model, Path(pretrained), f"{where}.pretrained")
    return model


def _load_pretrained(model: torch.nn.Module, path: Path, where: str) -> None:
    """Strict load; only the class-count heads may differ (e.g. a COCO file): they stay fresh."""
    from bioloop.engine.checkpoint import apply_model_state, load_weights

    if not path.is_file():
        raise CheckpointError.at(where, "weights file not found", got=str(path),
                                 fix="give the path of a torchvision detector state dict")
    state = load_weights(path)
    own = model.state_dict()
    for key, value in own.items():
        if key.startswith(_CLASS_HEADS) and key in state and tuple(state[key].shape) != tuple(value.shape):
            state[key] = value
    apply_model_state(model, state, path=path)


def load_detector(path_or_dir, settings=None, *, device="cpu", where: str = "detector") -> torch.nn.Module:
    """The detector in a snapshot file, or the newest snapshot in a folder (eval mode)."""
    from bioloop.engine.checkpoint import apply_model_state, load_checkpoint

    path = Path(path_or_dir)
    if path.is_dir():
        found = snapshot_paths(path)
        if not found:
            raise CheckpointError.at(str(path), "no detector snapshot (detector-NNN.pt) in this folder",
                                     fix="train the detector first, or give a snapshot file")
        path = found[-1]
    if not path.is_file():
        raise CheckpointError.at(str(path), "detector snapshot not found", fix="check the path")
    state = load_checkpoint(path)
    info = _checked_snapshot(state, path, settings)
    model = build_detector(info["variant"], False, where=where, min_size=info.get("min_size"),
                           max_size=info.get("max_size"))
    apply_model_state(model, state["model"], path=path)
    return model.to(device).eval()


def _checked_snapshot(state: dict, path: Path, settings) -> dict:
    """What a detector snapshot says about its model: kind, variant, min_size, max_size, epoch."""
    info = dict(state.get("extras") or {}) if isinstance(state.get("extras"), dict) else {}
    if info.get("kind") != "detector" or "variant" not in info:
        raise CheckpointError.at(str(path), "not a bioloop detector snapshot", fix="give a detector-NNN.pt file "
                                 "written by train_detector")
    if settings is not None and info["variant"] != settings.variant:
        raise CheckpointError.at(str(path), f"this snapshot is a {info['variant']}, the settings ask for "
                                 f"{settings.variant}", fix="set detector.variant to the snapshot's, or start fresh")
    info["epoch"] = int(state.get("epoch", 0))
    return info


def _to_tensor(frame: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).float().div_(255.0)


@torch.inference_mode()
def detect(model: torch.nn.Module, frames, score_threshold: float = 0.5, max_animals: int | None = None,
           batch_size: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per HxWx3 uint8 frame, (boxes (n, 4) in frame pixels, scores (n,)), best first."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for first in range(0, len(frames), batch_size):
        images = [_to_tensor(f, device) for f in frames[first:first + batch_size]]
        for det in model(images):
            keep = det["scores"] >= score_threshold
            if "labels" in det:
                keep &= det["labels"] == 1
            scores, boxes = det["scores"][keep], det["boxes"][keep]
            order = torch.argsort(scores, descending=True)[:max_animals]
            out.append((boxes[order].double().cpu().numpy() - 0.5, scores[order].float().cpu().numpy()))
    return out


def box_recall(found: list[np.ndarray], truth: list[np.ndarray], iou: float = 0.5) -> float:
    """Share of true boxes matched by a detection with IoU >= ``iou`` (NaN without true boxes)."""
    from torchvision.ops import box_iou

    hits = total = 0
    for f, t in zip(found, truth):
        total += len(t)
        if len(t) and len(f):
            hits += int((box_iou(torch.as_tensor(t), torch.as_tensor(f)).max(dim=1).values >= iou).sum())
    return hits / total if total else float("nan")


# ---------------------------------------------------------------------------- training

def snapshot_paths(out_dir) -> list[Path]:
    """The ``detector-NNN.pt`` files in ``out_dir``, oldest epoch first."""
    folder = Path(out_dir)
    found = [(int(m.group(1)), p) for p in folder.glob("detector-*.pt") if (m := _SNAPSHOT.match(p.name))]
    return [p for _, p in sorted(found)]


def _read(reader, labels, row: int) -> np.ndarray:
    video = labels.video_paths[row] if labels.video_paths else ""
    fidx = None if labels.frame_indices is None else int(labels.frame_indices[row])
    frame = reader.read(labels.image_paths[row], video, fidx)
    return np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame[..., :3]


def train_detector(settings, labels, train_rows, out_dir, **options) -> Path:
    """Train (or resume) the detector through the engine: see ``detector_task.train_detector``."""
    from bioloop.tasks.pose.detector_task import train_detector as run

    return run(settings, labels, train_rows, out_dir, **options)
