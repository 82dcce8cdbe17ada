"""The Task base class: every hook the engine, the API and the CLI call, declared once.

The engine owns the loop (batches, precision, optimisation, checkpoints, logging,
distribution); the task owns data, model, loss, metrics, prediction and scoring.

A task subclasses :class:`Task` and overrides what it needs. The engine calls only the
hooks declared here (``Task.HOOKS``), directly, never by probing with ``getattr``; every
optional hook has a documented no-op default. A subclass method whose name looks like a
hook but is not one (``before_optimiser_step``, ``after_train``, ``colate``) is refused
when the class is defined, so a misspelt hook fails loudly instead of never being called.

Sampling contract: a training dataset's ``__getitem__`` receives ``(index, seed)``
tuples from the engine's sampler and must draw all its randomness (patch position,
augmentation) from ``numpy.random.default_rng(seed)``. The seed is a function of
(random_seed, epoch, position in epoch, rank), so a resumed run sees exactly the batches
an uninterrupted one would. Validation datasets receive plain integer indices and must be
deterministic. Datasets may define ``set_epoch(epoch)``; the engine calls it before each
epoch's DataLoader is built (a dataset-side hook, not a task hook).

The step is a module: the engine wraps ``training_step`` in one ``torch.nn.Module``
(``bioloop.engine.step.TrainingStep``) and DistributedDataParallel wraps that module, so
``training_step`` receives the plain model and may call it any number of times, on any
batch structure.
"""

from __future__ import annotations

import abc
import difflib
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import default_collate

from bioloop.errors import ConfigError

# what a method name starting with these words is taken to be: an engine hook
_HOOK_PREFIXES = ("before_", "after_", "on_", "build_")


class Task(abc.ABC):
    """One task (segmentation, pose, tracking): subclass it and register it in ``bioloop.tasks.TASKS``."""

    name: str = ""
    Config: type = None  # the attrs schema of the task's settings
    default_key_metric: str = "loss"
    # True when a training step may leave some model parameters without a gradient: DDP then walks
    # the autograd graph after each forward to find them (a small cost), instead of failing with
    # "Expected to have finished reduction in the prior iteration"
    find_unused_parameters: bool = False

    # every method the engine, api.py and cli.py may call on a task
    HOOKS: tuple[str, ...] = (
        "metric_mode", "build_model", "build_loss", "build_datasets", "parameter_groups", "collate",
        "before_training", "training_step", "before_optimizer_step", "validation_step", "reduce_validation",
        "figures", "checkpoint_extras", "follow_up_training", "after_training", "predict", "evaluate", "process", "view_batch",
        "check_config",
    )

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for attr, value in vars(cls).items():
            if attr.startswith("_") or attr in Task.HOOKS or not callable(_unwrap(value)):
                continue
            close = difflib.get_close_matches(attr, Task.HOOKS, n=1, cutoff=0.8)
            if close or attr.startswith(_HOOK_PREFIXES):
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise TypeError(
                    f"{cls.__module__}.{cls.__qualname__}.{attr}: looks like an engine hook but is not one{hint}; "
                    f"the engine calls only {', '.join(Task.HOOKS)} (rename it, or make it private with a "
                    f"leading '_')"
                )

    # ------------------------------------------------------------ required
    @abc.abstractmethod
    def build_model(self, cfg) -> torch.nn.Module:
        """The model described by the settings (``cfg.model`` or a built-in by name)."""

    @abc.abstractmethod
    def build_datasets(self, cfg) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
        """Training and validation datasets (see the sampling contract above)."""

    @abc.abstractmethod
    def training_step(self, model, batch, loss_fn, cfg) -> dict[str, torch.Tensor]:
        """Forward one batch; the dict holds "loss" and any further one-element tensors to log.

        ``model`` is the plain model (never the DDP wrapper): call it as often as the step needs.
        """

    @abc.abstractmethod
    def validation_step(self, model, batch, loss_fn, cfg) -> dict[str, Any]:
        """Metric parts of one batch (picklable; summed/combined by reduce_validation)."""

    @abc.abstractmethod
    def reduce_validation(self, parts: list[dict[str, Any]], cfg) -> dict[str, float]:
        """Combine the parts of every batch (from every rank) into named metrics."""

    # ------------------------------------------------------------ optional, with defaults
    def metric_mode(self, metric: str) -> Literal["min", "max"]:
        """Whether smaller or larger values of a validation metric are better (default: from its name)."""
        return infer_mode(metric)

    def build_loss(self, cfg) -> Any:
        """The training objective handed to training_step (default None: the step computes its own)."""
        return None

    def parameter_groups(self, model, cfg) -> list:
        """Optimizer parameter groups (default: every parameter of ``model`` in one group)."""
        return list(model.parameters())

    @staticmethod
    def collate(items):
        """Batch a list of dataset items for the DataLoader (default: torch's default_collate)."""
        return default_collate(items)

    def before_training(self, cfg, train_set, logger, say) -> bool:
        """Every rank, after set-up and before the first batch of a fresh run.

        ``logger`` is the run's RunLogger (a no-op off rank 0); ``say`` prints a message.
        Returning False ends the run there (e.g. tracking's ``view_batch.no_train``). Default: True.
        """
        return True

    def before_optimizer_step(self, model, epoch: int, cfg) -> None:
        """After backward, before clipping and the step, at each accumulation boundary.

        E.g. drop a frozen backbone's gradients (DDP-safe, unlike toggling requires_grad). Default: nothing.
        """

    def figures(self, model, batch, cfg) -> dict[str, Any]:
        """Matplotlib figures of one validation batch: inputs, targets, predictions (default: none)."""
        return {}

    def checkpoint_extras(self, cfg) -> dict[str, Any]:
        """Plain data stored with each checkpoint that prediction needs (default: nothing)."""
        return {}

    def check_config(self, cfg) -> list[str]:
        """What training start would refuse, checked cheaply for `bioloop config check`: input files exist,
        the model can be built (on the meta device, no weights read or downloaded). One house-format
        message per problem (default: nothing to check beyond the schema)."""
        return []

    def follow_up_training(self, cfg, result: dict[str, Any], runtime, *, quiet: bool = False) -> dict[str, Any]:
        """On every rank once training ends, before after_training: further training runs that every
        process takes part in on ``runtime`` (e.g. pose's top-down detector, under DDP when the run is).

        The returned dict is merged into train()'s result. Default: nothing more.
        """
        return {}

    def after_training(self, cfg, result: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
        """On the main process once training ends (e.g. predict test videos with the best checkpoint).

        The returned dict is merged into train()'s result. Default: nothing more.
        """
        return {}

    def predict(self, cfg, model, *, extras: dict[str, Any], **options) -> Path:
        """Run a trained model over new data and write files other tools open."""
        raise self._refuse(cfg, "predict", "predict")

    def evaluate(self, cfg, **options) -> dict[str, Any]:
        """Score predictions against ground truth."""
        raise self._refuse(cfg, "evaluate", "evaluate")

    def process(self, cfg, **options) -> Path:
        """``bioloop process``: post-process predictions (default: the task has no such step)."""
        raise self._refuse(cfg, "process", "process")

    def view_batch(self, cfg) -> Path:
        """``bioloop view-batch``: render a training batch to a picture (default: not available)."""
        raise self._refuse(cfg, "view-batch", "view_batch")

    def _refuse(self, cfg, command: str, hook: str) -> ConfigError:
        from bioloop.tasks import tasks_with

        having = tasks_with(hook)
        fix = f"use it with task = {' or '.join(repr(t) for t in having)}" if having else "no task has it yet"
        return ConfigError.at(config_where(cfg, "task"), f"{command} does not apply to the {self.name} task",
                              got=self.name, fix=fix)


def _unwrap(value):
    return value.__func__ if isinstance(value, (staticmethod, classmethod)) else value


def config_where(cfg, key: str) -> str:
    """``<config file name>: <key>``, the place an error about a setting points at."""
    source = getattr(cfg, "source", None)
    return f"{source.name if source else 'config'}: {key}"


def infer_mode(metric: str) -> Literal["min", "max"]:
    """Default direction from a metric's name: losses and errors go down, scores go up."""
    lowered = metric.lower()
    if any(word in lowered for word in ("loss", "error", "rmse", "distance", "hausdorff")):
        return "min"
    return "max"
