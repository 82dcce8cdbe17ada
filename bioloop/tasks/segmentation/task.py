"""The segmentation task: data, model, loss and metrics for the shared engine."""

from __future__ import annotations

from typing import Any

import torch

from bioloop.errors import ConfigError
from bioloop.tasks.base import infer_mode
from bioloop.tasks.segmentation.config import SegmentationConfig


def _where(cfg, key: str) -> str:
    return f"{cfg.source.name if cfg.source else 'config'}: {key}"


class SegmentationTask:
    name = "segmentation"
    Config = SegmentationConfig
    default_key_metric = "iou_mean"

    def metric_mode(self, metric: str) -> str:
        return infer_mode(metric)

    # ------------------------------------------------------------ model and loss
    def build_model(self, cfg) -> torch.nn.Module:
        if cfg.model is not None:
            if not isinstance(cfg.model, torch.nn.Module):
                raise ConfigError.at(_where(cfg, "model"), "expected a torch.nn.Module instance", got=cfg.model,
                                     fix="write model = MyNet(...) or use model_name/model_kwargs")
            return cfg.model
        from bioloop.models import build_model

        kwargs = {"in_channels": 1, "out_channels": len(cfg.classes), **cfg.model_kwargs}
        if kwargs["out_channels"] != len(cfg.classes):
            raise ConfigError.at(_where(cfg, "model_kwargs"), f"out_channels must equal the number of classes "
                                 f"({len(cfg.classes)})", got=kwargs["out_channels"], fix="remove out_channels")
        model = build_model(cfg.model_name, kwargs, where=_where(cfg, "model_name"))
        dims = getattr(model, "dims", None)
        if dims is not None and dims != cfg.spatial_dims:
            raise ConfigError.at(_where(cfg, "model_name"), f"a {dims}D model cannot take the "
                                 f"{cfg.spatial_dims}D patches of input_array_info {tuple(cfg.input_array_info.shape)}",
                                 got=cfg.model_name, fix=f"use the {cfg.spatial_dims}d variant or change the patch shape")
        return model

    def build_loss(self, cfg):
        from bioloop.tasks.segmentation.losses import build_criterion

        return build_criterion(cfg.criterion, dict(cfg.criterion_kwargs), where=_where(cfg, "criterion"),
                               num_classes=len(cfg.classes))

    # ------------------------------------------------------------ data
    def build_datasets(self, cfg):
        from bioloop.tasks.segmentation.data import RandomPatches, Tiles, open_crops

        train = RandomPatches(cfg, open_crops(cfg, "train"))
        val_crops = open_crops(cfg, "validate")
        return train, (Tiles(cfg, val_crops) if val_crops else None)

    # ------------------------------------------------------------ steps
    def training_step(self, model, batch, loss_fn, cfg) -> dict[str, torch.Tensor]:
        logits = model(batch["raw"])
        return {"loss": loss_fn(logits.float(), batch["target"])}

    def validation_step(self, model, batch, loss_fn, cfg) -> dict[str, Any]:
        from bioloop.tasks.segmentation.metrics import confusion_counts

        logits = model(batch["raw"]).float()
        target = batch["target"]
        loss = loss_fn(logits, target)
        counts = confusion_counts(logits, target, threshold=cfg.threshold, from_logits=True)
        return {"counts": counts.cpu(), "loss": float(loss), "n": int(target.shape[0])}

    def reduce_validation(self, parts, cfg) -> dict[str, float]:
        from bioloop.tasks.segmentation.metrics import scores_from_counts

        counts = sum(p["counts"] for p in parts)
        n = sum(p["n"] for p in parts)
        metrics = {"loss": sum(p["loss"] * p["n"] for p in parts) / max(n, 1)}
        metrics.update(scores_from_counts(counts, list(cfg.classes)))
        return metrics

    def figures(self, model, batch, cfg) -> dict[str, Any]:
        from bioloop.tasks.segmentation.figures import batch_figure

        logits = model(batch["raw"][:1]).float()
        return {"batch": batch_figure(batch["raw"][0], batch["target"][0], torch.sigmoid(logits[0]), cfg.classes)}

    def checkpoint_extras(self, cfg) -> dict[str, Any]:
        info = cfg.input_array_info
        return {"classes": list(cfg.classes), "normalization": cfg.normalization,
                "input_shape": list(info.shape), "input_scale": list(info.scale), "spatial_dims": cfg.spatial_dims}

    # ------------------------------------------------------------ predict / evaluate
    def predict(self, cfg, model, *, extras, **options):
        from bioloop.tasks.segmentation.predict import predict_volume

        return predict_volume(cfg, model, extras=extras, **options)

    def evaluate(self, cfg, **options):
        from bioloop.tasks.segmentation.evaluate import evaluate_semantic

        return evaluate_semantic(cfg, **options)


TASK = SegmentationTask()
