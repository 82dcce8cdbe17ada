"""Top-down (``method = "td"``) wiring of the pose task: crop datasets, the detector, crop -> frame.

The pose model of a top-down config sees ``detector.crop_size`` crops of single animals
(``topdown.PoseCrops``); validation maps its crop-pixel predictions and truths back to frame
pixels with each item's box, so metrics read as for bottom-up. ``bioloop train`` trains the
detector through the shared engine after the pose model (``PoseTask.after_training``) into ``<checkpoint folder>/detector/``
(``detector_dir``; its TensorBoard and ``metrics.csv`` in ``<run folder>/detector/``), resuming or
skipping it when rerun; prediction detects, crops, poses and
writes every animal (``predict_frames``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioloop.errors import CheckpointError, ConfigError
from bioloop.tasks.base import config_where as _where

__all__ = ["detector_dir", "crop_hw", "check_topdown", "crop_datasets", "crops_to_frame", "train_config_detector",
           "load_config_detector", "predict_frames", "pack_animals"]


def detector_dir(cfg) -> Path:
    """Where ``bioloop train`` keeps the detector: ``<checkpoint folder>/detector``."""
    return Path(cfg.checkpoint_dir) / "detector"


def crop_hw(cfg) -> tuple[int, int]:
    size = cfg.detector.crop_size
    return int(size.height), int(size.width)


def check_topdown(cfg) -> None:
    """Top-down pose models see single crops: no temporal context, no unsupervised video losses."""
    if cfg.model_type == "heatmap_mhcrnn" or cfg.losses_to_use:
        what = "model_type = 'heatmap_mhcrnn'" if cfg.model_type == "heatmap_mhcrnn" else \
            f"losses_to_use = {list(cfg.losses_to_use)}"
        raise ConfigError.at(_where(cfg, "method"), f"top-down models do not support {what}", got="td",
                             fix="use method = 'bu' for context models and unsupervised losses, or a plain "
                                 "heatmap/regression model with method = 'td'")


def crop_datasets(cfg, labels, split, augmentation):
    """(train, val) ``PoseCrops``: one item per labeled animal; box jitter for training only."""
    from bioloop.tasks.pose.topdown import PoseCrops

    check_topdown(cfg)
    hw, padding = crop_hw(cfg), cfg.detector.box_padding
    train = PoseCrops(labels, split["train"], crop_hw=hw, box_padding=padding, augmentation=augmentation)
    val = PoseCrops(labels, split["val"], crop_hw=hw, box_padding=padding, jitter=0.0) if len(split["val"]) else None
    return train, (val if val is not None and len(val) else None)


def crops_to_frame(keypoints, boxes, hw) -> np.ndarray:
    """(B, K, 2) crop pixels of the crops of ``boxes`` (B, 4) -> frame pixels."""
    from bioloop.tasks.pose.topdown import crop_transform

    kp = np.asarray(keypoints, dtype=np.float64)
    return np.stack([crop_transform(box, hw).to_frame(k) for k, box in zip(kp, np.asarray(boxes))]) \
        if len(kp) else kp


def train_config_detector(cfg, labels, split, *, runtime=None, quiet: bool = False) -> Path:
    """Train (or resume, or skip when finished) the config's detector; returns its final snapshot.

    With the pose run's ``runtime`` every rank takes part (DDP under torchrun); without, one process."""
    from bioloop.engine.runtime import resolve_device
    from bioloop.tasks.pose.detector import train_detector

    device = runtime.device if runtime is not None else resolve_device(cfg.device, where=_where(cfg, "device"))
    return train_detector(cfg.detector, labels, split["train"], detector_dir(cfg), val_rows=split["val"],
                          seed=cfg.random_seed, device=device, precision=cfg.precision, show_progress=not quiet,
                          runtime=runtime,
                          where=_where(cfg, "detector"), source=cfg.source, tensorboard=cfg.logger.tensorboard,
                          num_workers=cfg.num_workers, run_dir=Path(cfg.run_dir) / "detector")


def load_config_detector(cfg, device):
    """The trained detector: ``detector_best.pth`` (best validation recall), else the newest snapshot."""
    from bioloop.tasks.pose.detector import load_detector, snapshot_paths
    from bioloop.tasks.pose.detector_task import BEST_FILE

    folder = detector_dir(cfg)
    best = folder / BEST_FILE
    path = best if best.is_file() else (snapshot_paths(folder) or [None])[-1]
    if path is None:
        raise CheckpointError.at(str(folder), "no trained detector in this folder (method = 'td' needs one)",
                                 fix="train first: `bioloop train CONFIG` trains the detector after the pose model")
    return load_detector(path, cfg.detector, device=device, where=_where(cfg, "detector"))


def predict_frames(cfg, detector, model, task, frames, device, num_keypoints: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per HxWx3 uint8 frame, (keypoints (n, K, 2) frame pixels, confidences (n, K)) of its n animals."""
    from bioloop.tasks.pose.topdown import predict_topdown

    settings = cfg.detector
    found = predict_topdown(detector, model, lambda out: task.decode(model, out), frames, crop_hw(cfg),
                            settings.score_threshold, settings.max_animals, device,
                            num_keypoints=num_keypoints)
    return [(kp, conf) for kp, conf, _, _ in found]


def pack_animals(per_frame, num_keypoints: int, max_animals: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, A, K, 2) keypoints and (N, A, K) confidences, NaN where a frame has fewer animals.

    A = ``max_animals``, else the largest count seen (at least 1); animals are best-detection first.
    """
    a = max_animals or max([len(kp) for kp, _ in per_frame] + [1])
    kp = np.full((len(per_frame), a, num_keypoints, 2), np.nan)
    conf = np.full((len(per_frame), a, num_keypoints), np.nan)
    for i, (k, c) in enumerate(per_frame):
        n = min(len(k), a)
        kp[i, :n], conf[i, :n] = k[:n], c[:n]
    return kp, conf
