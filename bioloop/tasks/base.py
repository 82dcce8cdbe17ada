"""The Task protocol: what the engine asks of every task.

The engine owns the loop (batches, precision, optimisation, checkpoints, logging,
distribution); the task owns data, model, loss, metrics, prediction and scoring.

Sampling contract: a training dataset's ``__getitem__`` receives ``(index, seed)``
tuples from the engine's sampler and must draw all its randomness (patch position,
augmentation) from ``numpy.random.default_rng(seed)``. The seed is a function of
(random_seed, epoch, position in epoch, rank), so a resumed run sees exactly the batches
an uninterrupted one would. Validation datasets receive plain integer indices and must be
deterministic.

Optional hooks the engine uses when a task (or its dataset) defines them:

- ``dataset.set_epoch(epoch)``: called before each epoch's DataLoader is built.
- ``task.parameter_groups(model, cfg) -> list``: optimizer parameter groups (e.g. a backbone
  with its own learning rate) instead of ``model.parameters()``.
- ``task.before_optimizer_step(model, epoch, cfg)``: after backward, before clipping and the
  step (e.g. drop a frozen backbone's gradients; DDP-safe, unlike toggling requires_grad).
- ``task.process(cfg, **options)``: ``bioloop process``.
- ``task.before_training(cfg, train_set, logger, say) -> bool``: every rank, after set-up and before
  the first batch of a fresh run (``logger`` is the run's RunLogger, a no-op off rank 0; ``say``
  prints a message); False ends the run there (e.g. tracking's ``view_batch.no_train``).
- ``task.after_training(cfg, result, quiet) -> dict``: on the main process once training ends
  (e.g. predict test videos with the best checkpoint); its dict is merged into train()'s result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import torch


class Task(Protocol):
    name: str
    Config: type
    default_key_metric: str

    def metric_mode(self, metric: str) -> Literal["min", "max"]:
        """Whether smaller or larger values of a validation metric are better."""

    def build_model(self, cfg) -> torch.nn.Module:
        """The model described by the settings (``cfg.model`` or a built-in by name)."""

    def build_loss(self, cfg) -> Any:
        """The training objective (a module or callable used by training_step)."""

    def build_datasets(self, cfg) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
        """Training and validation datasets (see the sampling contract above)."""

    def training_step(self, model, batch, loss_fn, cfg) -> dict[str, torch.Tensor]:
        """Forward one batch; the dict holds "loss" and any further scalars to log."""

    def validation_step(self, model, batch, loss_fn, cfg) -> dict[str, Any]:
        """Metric parts of one batch (picklable; summed/combined by reduce_validation)."""

    def reduce_validation(self, parts: list[dict[str, Any]], cfg) -> dict[str, float]:
        """Combine the parts of every batch (from every rank) into named metrics."""

    def figures(self, model, batch, cfg) -> dict[str, Any]:
        """Matplotlib figures of one validation batch: inputs, targets, predictions."""

    def checkpoint_extras(self, cfg) -> dict[str, Any]:
        """Plain data stored with each checkpoint that prediction needs (normalisation, classes)."""

    def predict(self, cfg, model, *, extras: dict[str, Any], **options) -> Path:
        """Run a trained model over new data and write files other tools open."""

    def evaluate(self, cfg, **options) -> dict[str, Any]:
        """Score predictions against ground truth."""


def config_where(cfg, key: str) -> str:
    """``<config file name>: <key>``, the place an error about a setting points at."""
    return f"{cfg.source.name if cfg.source else 'config'}: {key}"


def infer_mode(metric: str) -> Literal["min", "max"]:
    """Default direction from a metric's name: losses and errors go down, scores go up."""
    lowered = metric.lower()
    if any(word in lowered for word in ("loss", "error", "rmse", "distance", "hausdorff")):
        return "min"
    return "max"
