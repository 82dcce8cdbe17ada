"""The pose task for the shared engine: labeled frames -> heatmap (or regression) model -> keypoints.

Groundwork for issue 4, not yet registered in ``bioloop.tasks.TASKS``: supervised heatmap and
regression models (with DLC location refinement), grouped splits written to the run folder,
augmentation pipelines, a frozen-then-unfrozen backbone with its own learning rate, metrics in
frame pixels, prediction on image folders and videos to DLC-style CSV (+ overlay mp4), and
evaluation against a labels file. Still to wire: unsupervised losses on video clips, the
temporal context model's context frames, and top-down detection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioloop.errors import ConfigError
from bioloop.tasks.base import config_where as _where, infer_mode
from bioloop.tasks.pose.config import PoseConfig



def labels_path(cfg) -> Path:
    path = Path(cfg.labels_file)
    return path if path.is_absolute() else Path(cfg.data_dir) / path


def load_labels(cfg):
    """The labels file, checked against keypoint_names / num_keypoints and put in their order."""
    from bioloop.tasks.pose.labels import check_keypoints, read_labels

    labels = read_labels(labels_path(cfg))
    return check_keypoints(labels, cfg.keypoint_names, cfg.num_keypoints,
                           where=cfg.source.name if cfg.source else "config")


class PoseTask:
    name = "pose"
    Config = PoseConfig
    default_key_metric = "pixel_error/mean"

    def metric_mode(self, metric: str) -> str:
        return infer_mode(metric)

    # ------------------------------------------------------------ model and loss
    def _num_keypoints(self, cfg) -> int:
        if cfg.keypoint_names:
            return len(cfg.keypoint_names)
        if cfg.num_keypoints:
            return cfg.num_keypoints
        return load_labels(cfg).num_keypoints

    def build_model(self, cfg) -> torch.nn.Module:
        if cfg.model is not None:
            return cfg.model
        from bioloop.tasks.pose.models import build_lp_model, build_pose_model

        k = self._num_keypoints(cfg)
        if cfg.pose_model is not None:
            return build_pose_model(dict(cfg.pose_model), num_keypoints=k, where=_where(cfg, "pose_model"))
        if cfg.model_type == "heatmap_mhcrnn":
            raise ConfigError.at(_where(cfg, "model_type"), "training heatmap_mhcrnn needs context frames around "
                                 "each labeled frame, which this version's pose data pipeline does not read yet",
                                 got=cfg.model_type, fix="use model_type = 'heatmap' for now")
        return build_lp_model(cfg.model_type, cfg.backbone, k, cfg.downsample_factor, cfg.pretrained,
                              locref=cfg.locref, seed=cfg.rng_seed_model_pt, where=_where(cfg, "model"))

    def build_loss(self, cfg):
        return None  # the heatmap targets depend on the model's stride; see training_step

    def parameter_groups(self, model, cfg) -> list:
        """Head parameters at learning_rate, the backbone at learning_rate * backbone_lr_factor."""
        backbone = getattr(model, "backbone", None)
        if backbone is None:
            return list(model.parameters())
        ids = set(map(id, backbone.parameters()))
        head = [p for p in model.parameters() if id(p) not in ids]
        return [{"params": head},
                {"params": list(backbone.parameters()), "lr": cfg.learning_rate * cfg.backbone_lr_factor}]

    def before_optimizer_step(self, model, epoch: int, cfg) -> None:
        """Before ``unfreezing_epoch`` the backbone does not move (its gradients are dropped)."""
        backbone = getattr(model, "backbone", None)
        if backbone is not None and epoch < cfg.unfreezing_epoch:
            for p in backbone.parameters():
                p.grad = None

    # ------------------------------------------------------------ data
    def build_datasets(self, cfg):
        from bioloop.tasks.pose.augment import build_augmentation
        from bioloop.tasks.pose.data import PoseFrames
        from bioloop.tasks.pose.split import split_frames, write_split

        labels = load_labels(cfg)
        split = split_frames(labels, train_prob=cfg.train_prob, val_prob=cfg.val_prob, train_frames=cfg.train_frames,
                             seed=cfg.rng_seed_data_pt, where=_where(cfg, "train_prob"))
        write_split(Path(cfg.run_dir) / "split.csv", split, labels)
        dims = (cfg.image_resize_dims.height, cfg.image_resize_dims.width)
        augmentation = build_augmentation(cfg.imgaug, labels.keypoint_names, _where(cfg, "imgaug"),
                                          flip_pairs=cfg.flip_pairs)
        train = PoseFrames(labels, split["train"], image_resize_dims=dims, augmentation=augmentation)
        val = PoseFrames(labels, split["val"], image_resize_dims=dims) if len(split["val"]) else None
        return train, val

    # ------------------------------------------------------------ steps
    def _supervised(self, model, batch, cfg) -> tuple[torch.Tensor, dict]:
        from bioloop.tasks.pose.heatmaps import encode_offsets, heatmap_loss, make_heatmaps

        out = model(batch["image"])
        target = batch["keypoints"]
        if "keypoints" in out:  # regression: mean pixel error over labeled keypoints
            valid = torch.isfinite(target).all(-1)
            diff = (out["keypoints"] - torch.nan_to_num(target)).norm(dim=-1)
            loss = (diff * valid).sum() / valid.sum().clamp(min=1)
            return loss, out
        maps = out["heatmaps"].float()
        stride = model.stride if hasattr(model, "stride") else batch["image"].shape[-1] // maps.shape[-1]
        size = tuple(batch["image"].shape[-2:])
        normalize = "peak" if cfg.heatmap_loss_type == "mse" else "sum"
        nan_mode = "uniform" if cfg.uniform_heatmaps_for_nan_keypoints else "zero"
        goal, valid = make_heatmaps(target, size, stride, cfg.heatmap_sigma, kind=cfg.heatmap_target,
                                    nan_mode=nan_mode, normalize=normalize)
        use = torch.ones_like(valid) if cfg.uniform_heatmaps_for_nan_keypoints else valid
        loss = heatmap_loss(maps, goal, use, kind=cfg.heatmap_loss_type)
        if "offsets" in out:
            offsets, mask = encode_offsets(target, size, stride, radius=2.0 * stride)
            pred = out["offsets"].float().reshape(mask.shape[0], mask.shape[1], 2, *mask.shape[2:])
            goal_off = offsets.reshape_as(pred)
            weight = mask[:, :, None].expand_as(pred).float()
            loc = torch.nn.functional.smooth_l1_loss(pred, goal_off, reduction="none")
            loss = loss + 0.05 * (loc * weight).sum() / weight.sum().clamp(min=1)
        return loss, out

    def training_step(self, model, batch, loss_fn, cfg) -> dict[str, torch.Tensor]:
        loss, _ = self._supervised(model, batch, cfg)
        return {"loss": loss}

    def decode(self, model, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (B, K, 2) in network-input pixels and confidences (B, K)."""
        from bioloop.tasks.pose.heatmaps import decode_heatmaps, decode_with_offsets

        if "keypoints" in out:
            kp = out["keypoints"].float()
            return kp, torch.ones(kp.shape[:2], device=kp.device)
        maps = out["heatmaps"].float()
        if "offsets" in out:
            return decode_with_offsets(maps, out["offsets"].float(), model.stride)
        return decode_heatmaps(maps, model.stride)

    def validation_step(self, model, batch, loss_fn, cfg) -> dict[str, Any]:
        from bioloop.tasks.pose.data import unresize_keypoints

        loss, out = self._supervised(model, batch, cfg)
        pred, _ = self.decode(model, out)
        size = tuple(batch["image"].shape[-2:])
        frames_pred, frames_true = [], []
        for p, t, hw in zip(pred.cpu().numpy(), batch["keypoints"].cpu().numpy(), batch["orig_hw"].cpu().numpy()):
            frames_pred.append(unresize_keypoints(p, tuple(hw), size))
            frames_true.append(unresize_keypoints(t, tuple(hw), size))
        return {"pred": np.stack(frames_pred), "true": np.stack(frames_true), "loss": float(loss),
                "n": int(len(pred))}

    def reduce_validation(self, parts, cfg) -> dict[str, float]:
        from bioloop.tasks.pose.metrics import summarize

        pred = np.concatenate([p["pred"] for p in parts])
        true = np.concatenate([p["true"] for p in parts])
        n = sum(p["n"] for p in parts)
        names = list(cfg.keypoint_names or [f"kp{i}" for i in range(pred.shape[1])])
        metrics = {"loss": sum(p["loss"] * p["n"] for p in parts) / max(n, 1)}
        metrics.update(summarize(pred, true, names, thresholds=tuple(cfg.eval.pck_thresholds)))
        return metrics

    def figures(self, model, batch, cfg) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from bioloop.tasks.pose.data import IMAGENET_MEAN, IMAGENET_STD

        out = model(batch["image"][:1])
        pred, _ = self.decode(model, out)
        image = batch["image"][0].cpu().numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(np.clip(image, 0, 1))
        true = batch["keypoints"][0].cpu().numpy()
        ax.scatter(true[:, 0], true[:, 1], s=25, facecolors="none", edgecolors="lime", label="label")
        p = pred[0].detach().cpu().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=10, c="magenta", label="prediction")
        ax.legend(loc="lower right", fontsize=6)
        ax.set_axis_off()
        return {"keypoints": fig}

    def checkpoint_extras(self, cfg) -> dict[str, Any]:
        names = list(cfg.keypoint_names) if cfg.keypoint_names else list(load_labels(cfg).keypoint_names)
        return {"keypoint_names": names, "image_resize_dims": [cfg.image_resize_dims.height, cfg.image_resize_dims.width],
                "model_type": cfg.model_type, "downsample_factor": cfg.downsample_factor}

    # ------------------------------------------------------------ predict / evaluate
    def predict(self, cfg, model, *, extras, **options):
        from bioloop.tasks.pose.predict import predict_pose

        return predict_pose(cfg, model, self, extras=extras, **options)

    def evaluate(self, cfg, *, prediction, truth=None, report=None, **_options) -> dict[str, Any]:
        from bioloop.tasks.pose.evaluate import evaluate_pose

        return evaluate_pose(cfg, prediction=prediction, truth=truth or str(labels_path(cfg)), report=report)


TASK = PoseTask()
