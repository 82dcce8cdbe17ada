"""Semi-supervised pose training: unlabeled video clips beside each labeled batch (Lightning Pose's
``losses_to_use``), run on CPU by our own video reader (no DALI).

Each labeled sample brings a clip of ``clip_frames(cfg)`` consecutive unlabeled frames drawn from
its own seed, so a batch holds about ``dali.base_train_sequence_length`` unlabeled frames
(``dali.context_train_batch_size`` for ``heatmap_mhcrnn``) in clips of at least 2 frames, and a
resumed run sees the same clips. Predictions on unlabeled frames are differentiable soft-argmax
keypoints in network-input pixels; the PCA losses are fitted on the training split's labels
mapped to the same pixels, so every epsilon is in network-input pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from bioloop.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def clip_frames(cfg) -> int:
    """Unlabeled frames per labeled sample (at least 2, for the temporal loss)."""
    total = cfg.dali.context_train_batch_size if cfg.model_type == "heatmap_mhcrnn" \
        else cfg.dali.base_train_sequence_length
    return max(2, math.ceil(total / cfg.batch_size))


def unlabeled_videos(cfg, where: str) -> list[Path]:
    folder = Path(cfg.video_dir)
    if not folder.is_dir():
        raise DataError.at(where, "video_dir is not a folder", got=str(folder),
                           fix="point video_dir at a folder of unlabeled videos")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise DataError.at(where, "no videos in video_dir", got=str(folder),
                           fix=f"put {', '.join(VIDEO_SUFFIXES)} files there")
    return videos


class WithUnlabeled(torch.utils.data.Dataset):
    """A labeled training set whose items also carry ``"unlabeled"``: a clip (T, 3, H, W) (or
    (T, 2c+1, 3, H, W) with context) ImageNet-normalised, and ``"epoch"`` for loss warm-up."""

    def __init__(self, labeled, unlabeled):
        self.labeled, self.unlabeled, self.epoch = labeled, unlabeled, 0

    def __len__(self) -> int:
        return len(self.labeled)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        inner = getattr(self.labeled, "set_epoch", None)
        if callable(inner):
            inner(epoch)

    def __getitem__(self, key) -> dict:
        from bioloop.tasks.pose.data import IMAGENET_MEAN, IMAGENET_STD

        item = dict(self.labeled[key])
        seed = key[1] if isinstance(key, tuple) else int(key)
        clip_seed = int(np.random.SeedSequence([int(seed), 7]).generate_state(1)[0])
        clip = self.unlabeled[(0, clip_seed)]["images"]  # [0, 1]
        mean = torch.as_tensor(IMAGENET_MEAN, dtype=clip.dtype).reshape(3, 1, 1)
        std = torch.as_tensor(IMAGENET_STD, dtype=clip.dtype).reshape(3, 1, 1)
        item["unlabeled"] = (clip - mean) / std
        item["epoch"] = self.epoch
        return item


class UnsupervisedObjective(torch.nn.Module):
    """The unsupervised losses of ``losses_to_use`` with their weights and warm-up."""

    def __init__(self, losses: dict[str, torch.nn.Module], warmup: dict[str, int]):
        super().__init__()
        self.losses = torch.nn.ModuleDict(losses)
        self.warmup = dict(warmup)

    def forward(self, keypoints: torch.Tensor, confidence: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """``keypoints (B, T, K, 2)``, ``confidence (B, T, K)`` -> weighted loss terms by name."""
        from bioloop.tasks.pose.unsupervised import annealed_weight

        out = {}
        for name, loss in self.losses.items():
            weight = annealed_weight(epoch, loss.weight, self.warmup[name])
            if name == "temporal":
                value = loss(keypoints, confidence, weighted=False)
            else:
                value = loss(keypoints, weighted=False)
            out[name] = value * weight
        return out


def build_objective(cfg, labels, train_rows, resize_hw, where, views=None) -> UnsupervisedObjective:
    """Losses fitted on the training split's labels mapped to network-input pixels. ``views`` (a multi-view
    project's labels per view; ``labels`` is then their combination) maps each view by its own frame size,
    and ``pca_multiview`` matches the views' columns."""
    if views is not None:
        from bioloop.tasks.pose.multiview import column_matches

        parts = [_resized_train_keypoints(view, train_rows, resize_hw) for view in views]
        matches = column_matches(len(views), views[0].num_keypoints)
        return _objective(cfg, np.concatenate(parts, axis=1), matches)
    if labels.keypoints.shape[1] != 1:
        raise DataError.at(where, "unsupervised losses need single-animal labels",
                           got=f"{labels.keypoints.shape[1]} animals", fix="remove losses_to_use for multi-animal data")
    return _objective(cfg, _resized_train_keypoints(labels, train_rows, resize_hw), cfg.mirrored_column_matches)


def _resized_train_keypoints(labels, train_rows, resize_hw) -> np.ndarray:
    """(N, K, 2) training keypoints of the first animal in network-input pixels."""
    from bioloop.tasks.pose.data import FrameReader, resize_keypoints

    rows = np.asarray(train_rows, dtype=np.int64)
    sizes, reader, groups = {}, FrameReader(), labels.groups()
    kp = np.empty((len(rows), labels.num_keypoints, 2))
    for n, row in enumerate(rows):
        group = groups[row]
        if group not in sizes:  # frames of one video share a size: read one per video
            video = labels.video_paths[row] if labels.video_paths else ""
            fidx = None if labels.frame_indices is None else int(labels.frame_indices[row])
            sizes[group] = reader.read(labels.image_paths[row], video, fidx).shape[:2]
        kp[n] = resize_keypoints(labels.keypoints[row, 0], sizes[group], resize_hw)
    reader.close()
    return kp


def _objective(cfg, kp, mirrored_column_matches) -> UnsupervisedObjective:
    from bioloop.tasks.pose.unsupervised import PCAMultiviewLoss, PCASingleviewLoss, TemporalLoss

    s = cfg.losses
    losses, warmup = {}, {}
    for name in cfg.losses_to_use:
        if name == "temporal":
            losses[name] = TemporalLoss(s.temporal.epsilon, s.temporal.prob_threshold, s.temporal.log_weight)
        elif name == "pca_singleview":
            losses[name] = PCASingleviewLoss(kp, cfg.columns_for_singleview_pca, s.pca_singleview.components_to_keep,
                                             s.pca_singleview.epsilon, log_weight=s.pca_singleview.log_weight)
        else:
            losses[name] = PCAMultiviewLoss(kp, mirrored_column_matches, s.pca_multiview.components_to_keep,
                                            s.pca_multiview.epsilon, log_weight=s.pca_multiview.log_weight)
        warmup[name] = getattr(s, name).warmup_epochs
    return UnsupervisedObjective(losses, warmup)
