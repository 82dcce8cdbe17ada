"""A tiny regression task for engine tests: y = x @ w_true, a linear model, MSE."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch

from bioloop.config.schema import TrainingConfig, setting
from bioloop.tasks.base import Task


@attrs.frozen(kw_only=True)
class ToyConfig(TrainingConfig):
    task: str = setting("toy", "test task", validator=None)
    n_samples: int = setting(64, "dataset size")
    nan_at_iteration: int | None = setting(None, "make the loss NaN at this (1-based) training call")
    noise: float = setting(0.0, "label noise")
    dropout: float = setting(0.0, "dropout before the linear layer")
    forwards: int = setting(1, "model calls per training step (the batch split into this many equal parts)")


class _Data(torch.utils.data.Dataset):
    def __init__(self, n, train, noise):
        rng = np.random.default_rng(0 if train else 1)
        self.x = rng.normal(size=(n, 4)).astype(np.float32)
        self.y = (self.x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))[:, None]
        self.train = train
        self.noise = noise

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        if self.train:
            index, seed = key
            jitter = np.random.default_rng(seed).normal(scale=self.noise, size=1).astype(np.float32)
        else:
            index, jitter = key, np.zeros(1, np.float32)
        return {"x": torch.from_numpy(self.x[index]), "y": torch.from_numpy(self.y[index] + jitter)}


class ToyTask(Task):
    name = "toy"
    Config = ToyConfig
    default_key_metric = "mse"

    def __init__(self):
        self.calls = {"train": 0, "val": 0}

    def metric_mode(self, metric):
        return "min" if metric in ("mse", "loss") else "max"

    def build_model(self, cfg):
        if cfg.model is not None:
            return cfg.model
        return torch.nn.Sequential(torch.nn.Dropout(cfg.dropout), torch.nn.Linear(4, 1))

    def build_loss(self, cfg):
        return torch.nn.MSELoss()

    def build_datasets(self, cfg):
        return _Data(cfg.n_samples, True, cfg.noise), _Data(16, False, 0.0)

    def training_step(self, model, batch, loss_fn, cfg):
        self.calls["train"] += 1
        if cfg.forwards == 1:
            loss = loss_fn(model(batch["x"]), batch["y"])
        else:  # several forwards before one backward: the mean of equal parts is the full batch's MSE
            parts = zip(batch["x"].chunk(cfg.forwards), batch["y"].chunk(cfg.forwards))
            loss = torch.stack([loss_fn(model(x), y) for x, y in parts]).mean()
        if cfg.nan_at_iteration is not None and self.calls["train"] == cfg.nan_at_iteration:
            loss = loss * float("nan")
        return {"loss": loss}

    def validation_step(self, model, batch, loss_fn, cfg):
        self.calls["val"] += 1
        err = ((model(batch["x"]) - batch["y"]) ** 2).sum().item()
        return {"sse": err, "n": batch["x"].shape[0]}

    def reduce_validation(self, parts, cfg) -> dict[str, float]:
        n = sum(p["n"] for p in parts)
        mse = sum(p["sse"] for p in parts) / n
        return {"mse": mse, "score": -mse}

    def figures(self, model, batch, cfg) -> dict[str, Any]:
        return {}

    def checkpoint_extras(self, cfg):
        return {"toy": True}
