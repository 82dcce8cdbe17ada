"""The segmentation task: data, model, loss and metrics for the shared engine."""

from __future__ import annotations

from typing import Any

import torch

from bioloop.errors import ConfigError
from bioloop.tasks.base import Task, config_where as _where
from bioloop.tasks.segmentation.config import SegmentationConfig
from bioloop.tasks.segmentation.targets import output_channels



class SegmentationTask(Task):
    name = "segmentation"
    Config = SegmentationConfig
    default_key_metric = "iou_mean"

    # ------------------------------------------------------------ model and loss
    def build_model(self, cfg) -> torch.nn.Module:
        if cfg.model is not None:
            if not isinstance(cfg.model, torch.nn.Module):
                raise ConfigError.at(_where(cfg, "model"), "expected a torch.nn.Module instance", got=cfg.model,
                                     fix="write model = MyNet(...) or use model_name/model_kwargs")
            self.check_model(cfg, cfg.model)
            return cfg.model
        from bioloop.models import build_model

        channels = output_channels(cfg)
        kwargs = {"in_channels": 1, "out_channels": len(channels), **cfg.model_kwargs}
        if kwargs["out_channels"] != len(channels):
            raise ConfigError.at(_where(cfg, "model_kwargs"), f"out_channels must equal the number of output "
                                 f"channels ({len(channels)}: {channels})", got=kwargs["out_channels"],
                                 fix="remove out_channels")
        model = build_model(cfg.model_name, kwargs, where=_where(cfg, "model_name"))
        dims = getattr(model, "dims", None)
        if dims is not None and dims != cfg.spatial_dims:
            raise ConfigError.at(_where(cfg, "model_name"), f"a {dims}D model cannot take the "
                                 f"{cfg.spatial_dims}D patches of input_array_info {tuple(cfg.input_array_info.shape)}",
                                 got=cfg.model_name, fix=f"use the {cfg.spatial_dims}d variant or change the patch shape")
        self.check_model(cfg, model)
        return model

    def check_model(self, cfg, model) -> None:
        """The model's output size must be the target patch size (Allen size_in/size_out)."""
        from bioloop.tasks.segmentation.data import target_info

        drop = 1 if cfg.spatial_dims == 2 else 0
        size_in = tuple(cfg.input_array_info.shape)[drop:]
        size_out = tuple(target_info(cfg).shape)[drop:]
        output_shape = getattr(model, "output_shape", None)
        expected = tuple(output_shape(size_in)) if callable(output_shape) else size_in
        if expected != size_out:
            hint = ""
            if callable(output_shape) and len(size_in) == 3:
                from bioloop.models import valid_sizes

                try:
                    near = valid_sizes(model, size_in, n=2)
                    hint = "; valid input sizes near yours: " + ", ".join(
                        f"{tuple(s)} -> {tuple(output_shape(tuple(s)))}" for s in near)
                except (ValueError, TypeError):
                    hint = ""
            key = "target_array_info" if cfg.target_array_info is not None else "input_array_info"
            raise ConfigError.at(_where(cfg, key), f"the model turns a {size_in} input patch into {expected}, "
                                 f"but the target patch is {size_out}", got=cfg.model_name,
                                 fix=f"set target_array_info shape to {expected} (with a leading 1 for 2D){hint}")

    def build_loss(self, cfg):
        from bioloop.tasks.segmentation.losses import build_criterion

        return build_criterion(cfg.criterion, dict(cfg.criterion_kwargs), where=_where(cfg, "criterion"),
                               num_classes=len(output_channels(cfg)), has_cost_map=self._has_cost_map)

    _has_cost_map = False
    _normalizer = None

    # ------------------------------------------------------------ data
    def build_datasets(self, cfg):
        from bioloop.tasks.segmentation.data import BufferedPatches, RandomPatches, Tiles, cache_crops, open_crops
        from bioloop.tasks.segmentation.datasplit import ensure_datasplit
        from bioloop.tasks.segmentation.transforms import Normalizer, rotation_margin

        ensure_datasplit(cfg)
        margin = rotation_margin(tuple((cfg.target_array_info or cfg.input_array_info).shape), cfg.spatial_transforms)
        context = [n // 2 + 2 * m + 1 for n, m in zip(cfg.input_array_info.shape, margin)]
        train_crops = open_crops(cfg, "train", context=context)
        val_crops = open_crops(cfg, "validate", context=context)
        # one bound for both; training and validation workers each keep a chunk cache
        cache_crops(cfg, train_crops + val_crops, processes=max(1, cfg.num_workers) * (2 if val_crops else 1))
        normalizer = Normalizer.parse(cfg.normalization, _where(cfg, "normalization"))
        if normalizer.needs_fit:
            normalizer.fit([c.raw for c in train_crops])
        if train_crops:
            warning = normalizer.range_warning([c.raw for c in train_crops], train_crops[0].raw.dtype,
                                               _where(cfg, "normalization"))
            if warning:
                import sys

                print(warning, file=sys.stderr, flush=True)
        self._normalizer = normalizer
        self._has_cost_map = any(c.cost is not None for c in train_crops)
        kind = BufferedPatches if cfg.patch_per_buffer else RandomPatches
        train = kind(cfg, train_crops, normalizer)
        return train, (Tiles(cfg, val_crops, normalizer) if val_crops else None)

    # ------------------------------------------------------------ steps
    def activation(self, cfg) -> str:
        from bioloop.tasks.segmentation.losses import activation_for

        return activation_for(cfg.criterion, dict(cfg.criterion_kwargs))

    def training_step(self, model, batch, loss_fn, cfg) -> dict[str, torch.Tensor]:
        if "augment" in batch:  # augment_on_device: the batch arrives un-augmented with its parameters
            from bioloop.tasks.segmentation.device_augment import augment_batch

            batch = augment_batch(batch, cfg)
        output = model(batch["raw"])
        return {"loss": _loss(loss_fn, output, batch)}

    def validation_step(self, model, batch, loss_fn, cfg) -> dict[str, Any]:
        from bioloop.tasks.segmentation.metrics import confusion_counts

        logits = model(batch["raw"])
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        logits = logits.float()
        target = batch["target"]
        loss = _loss(loss_fn, logits, batch)
        probs = _activate(logits, self.activation(cfg))
        counts = confusion_counts(probs, target, threshold=cfg.threshold, from_logits=False)
        return {"counts": counts.cpu(), "loss": float(loss), "n": int(target.shape[0])}

    def reduce_validation(self, parts, cfg) -> dict[str, float]:
        from bioloop.tasks.segmentation.metrics import scores_from_counts

        counts = sum(p["counts"] for p in parts)
        n = sum(p["n"] for p in parts)
        metrics = {"loss": sum(p["loss"] * p["n"] for p in parts) / max(n, 1)}
        metrics.update(scores_from_counts(counts, output_channels(cfg)))
        return metrics

    def figures(self, model, batch, cfg) -> dict[str, Any]:
        from bioloop.tasks.segmentation.figures import batch_figure

        logits = model(batch["raw"][:1])
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        probs = _activate(logits.float(), self.activation(cfg))
        return {"batch": batch_figure(batch["raw"][0], batch["target"][0], probs[0], output_channels(cfg))}

    def checkpoint_extras(self, cfg) -> dict[str, Any]:
        from bioloop.tasks.segmentation.data import target_info
        from bioloop.tasks.segmentation.transforms import Normalizer

        info, target = cfg.input_array_info, target_info(cfg)
        normalizer = self._normalizer or Normalizer.parse(cfg.normalization, _where(cfg, "normalization"))
        targets = cfg.instance_targets
        return {"classes": output_channels(cfg), "normalization": normalizer.state(),
                "instance_targets": None if targets is None else targets.state(cfg.spatial_dims),
                "input_shape": list(info.shape), "input_scale": list(info.scale),
                "target_shape": list(target.shape), "target_scale": list(target.scale),
                "spatial_dims": cfg.spatial_dims, "activation": self.activation(cfg)}

    # ------------------------------------------------------------ predict / evaluate
    def predict(self, cfg, model, *, extras, **options):
        from bioloop.tasks.segmentation.predict import predict_volume

        return predict_volume(cfg, model, extras=extras, **options)

    def evaluate(self, cfg, **options):
        from bioloop.tasks.segmentation.evaluate import evaluate

        return evaluate(cfg, **options)

    def process(self, cfg, **options):
        from bioloop.tasks.segmentation.process import process_volume

        targets = cfg.instance_targets
        return process_volume(cfg.process, list(cfg.classes), storage_options=cfg.storage_options or None,
                              targets=None if targets is None else targets.state(cfg.spatial_dims),
                              zarr_format=cfg.output_zarr_format, **options)


def _loss(loss_fn, output, batch) -> torch.Tensor:
    cost = batch.get("cost")
    if cost is None:
        return loss_fn(output, batch["target"])
    return loss_fn(output, batch["target"], weight=cost)


def _activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.softmax(logits, dim=1) if activation == "softmax" else torch.sigmoid(logits)


TASK = SegmentationTask()
