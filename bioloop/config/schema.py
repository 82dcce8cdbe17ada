"""The settings every task shares, and the sections they nest.

Flat names follow the CellMap toolkit (csc) so its users feel at home. Each field has one
line of documentation in ``metadata["doc"]``; tools/gen_config_docs.py turns these into
docs/configuration.md. Task schemas subclass :class:`TrainingConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs

from bioloop.config import validators as v


def setting(default=attrs.NOTHING, doc: str = "", *, validator=None, factory=None, path=False, internal=False):
    """An attrs field with its one-line documentation (meaning, unit)."""
    meta = {"doc": doc, "path": path, "internal": internal}
    if factory is not None:
        return attrs.field(factory=factory, validator=validator, metadata=meta)
    return attrs.field(default=default, validator=validator, metadata=meta)


@attrs.frozen(kw_only=True)
class EarlyStopping:
    """Stop when the monitored metric has not improved for ``patience`` validations."""

    patience: int = setting(10, "validations without improvement before stopping", validator=v.at_least(1))
    min_delta: float = setting(0.0, "smallest change that counts as an improvement", validator=v.at_least(0))
    min_epochs: int = setting(0, "never stop before this many epochs", validator=v.at_least(0))
    metric: str | None = setting(None, "metric to watch; None uses key_metric")
    mode: Literal["min", "max"] | None = setting(None, "direction of improvement; None infers it from the metric")


@attrs.frozen(kw_only=True)
class Logger:
    """Where and how often training reports."""

    tensorboard: bool = setting(True, "write TensorBoard event files to logs_save_path")
    wandb: dict[str, Any] | None = setting(
        None, "keyword arguments for wandb.init (project, entity, mode, ...); None disables W&B"
    )
    log_every_n_steps: int = setting(10, "log training scalars every this many iterations", validator=v.at_least(1))
    figures: bool = setting(True, "log a figure of inputs, targets and predictions at each validation")


@attrs.frozen(kw_only=True)
class TrainingConfig:
    """Settings of the training engine, shared by every task."""

    task: str = setting("segmentation", "which task this config trains (a name in bioloop.tasks.TASKS)",
                        validator=v.registered_task)

    # model
    model: Any = setting(None, "a ready torch.nn.Module; when set, model_name/model_kwargs are not used to build")
    model_name: str = setting("2d_unet", "name of a built-in architecture, also used in file names")
    model_kwargs: dict[str, Any] = setting(factory=dict, doc="keyword arguments for the built-in architecture")
    model_to_load: str | None = setting(
        None, "checkpoint or weights file to start from at epoch 0 (fine-tuning)", path=True
    )
    load_model: str | None = setting(
        "latest", "resume from 'latest', 'best', a checkpoint path, or None to start fresh"
    )
    load_scheduler_state_dict: bool = setting(True, "restore the scheduler on resume; False keeps an edited schedule")

    # optimisation
    learning_rate: float = setting(1e-4, "initial learning rate", validator=v.all_of(v.finite, v.greater_than(0)))
    optimizer: Any = setting(
        None, "optimizer instance, class, callable(params) or {'type': 'AdamW', 'params': {...}}; default RAdam"
    )
    scheduler: Any = setting(None, "LR scheduler instance, class, callable(optimizer) or spec dict (nesting allowed)")
    scheduler_interval: Literal["epoch", "step"] = setting("epoch", "step the scheduler after each epoch or each optimizer step")
    criterion: Any = setting(None, "loss: a torch loss class/instance, a name, or a callable; default is the task's")
    criterion_kwargs: dict[str, Any] = setting(factory=dict, doc="keyword arguments for the criterion class")
    max_grad_norm: float | None = setting(None, "clip the gradient norm to this value once per optimizer step", validator=v.greater_than(0))
    gradient_accumulation_steps: int = setting(1, "iterations (batches) per optimizer step", validator=v.at_least(1))
    batch_size: int = setting(8, "samples per iteration (per process under DDP)", validator=v.at_least(1))
    epochs: int = setting(1000, "number of epochs", validator=v.at_least(1))
    iterations_per_epoch: int | None = setting(
        1000, "batches per epoch; None makes an epoch one pass over the training set", validator=v.at_least(1)
    )
    num_workers: int = setting(0, "DataLoader worker processes", validator=v.at_least(0))

    # validation and selection
    validate_every: int = setting(1, "validate every this many epochs", validator=v.at_least(1))
    validation_time_limit: float | None = setting(None, "seconds a validation may take; None is unlimited", validator=v.greater_than(0))
    validation_batch_limit: int | None = setting(None, "batches a validation may use; None is unlimited", validator=v.at_least(1))
    validation_batch_size: int | None = setting(None, "validation batch size; None uses batch_size", validator=v.at_least(1))
    key_metric: str | None = setting(None, "validation metric that picks the best checkpoint; None uses the task's")
    key_metric_mode: Literal["min", "max"] | None = setting(None, "direction of key_metric; None infers it")
    monitor: list[str] = setting(factory=list, doc="further metrics that each keep their own best checkpoint", validator=v.unique)
    early_stopping: EarlyStopping | None = setting(None, "early stopping section; None disables it")

    # files
    base_experiment_path: Path = setting(Path("."), "folder that relative output paths start from", path=True)
    model_save_path: str = setting(
        "checkpoints/{model_name}_{epoch}.pth", "checkpoint file template; needs {epoch}", validator=v.template_with("epoch")
    )
    logs_save_path: str = setting("tensorboard/{model_name}", "run folder: TensorBoard logs, metrics.csv, run records")
    max_snapshots: int | None = setting(None, "keep at most this many epoch checkpoints (best ones always kept)", validator=v.at_least(1))
    save_every_n_epochs: int = setting(1, "write an epoch checkpoint every this many epochs", validator=v.at_least(1))
    save_optimizer_state: bool = setting(
        True, "keep the optimizer's per-parameter state (e.g. Adam moments) in epoch and best checkpoints; False "
        "makes them about a third of the size, and a resume from one restarts those buffers (it says so)"
    )
    save_best_weights: bool = setting(
        False, "also write {model_name}_best_weights.pth with the best model's weights only (for predict, "
        "model_to_load or sharing; not resumable)"
    )

    # runtime
    random_seed: int = setting(42, "seed for python, numpy and torch", validator=v.at_least(0))
    deterministic: bool = setting(False, "use deterministic algorithms (slower)")
    device: str | None = setting(None, "'cpu', 'cuda', 'cuda:1', 'mps', or None/'auto' for cuda, then mps, then cpu")
    precision: Literal["32", "bf16", "16"] = setting("32", "autocast precision; '16' adds a gradient scaler")
    on_nonfinite_loss: Literal["error", "skip"] = setting("error", "stop on a NaN/inf loss, or skip that batch")
    logger: Logger = setting(factory=Logger, doc="logging section")

    # filled by the loader, not by users
    source: Any = setting(None, "where this config came from", internal=True)

    def check(self) -> list[str]:
        """Cross-field checks; each message starts with the key it is about."""
        problems = []
        if self.load_model not in (None, "latest", "best") and not Path(self.load_model).suffix:
            problems.append(
                f"load_model: expected 'latest', 'best', None or a checkpoint file path (got {self.load_model!r})"
            )
        if self.device is not None:
            kind = self.device.split(":")[0]
            if kind not in ("auto", "cpu", "cuda", "mps"):
                problems.append(f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (got {self.device!r})")
        return problems

    # helpers shared by the engine
    def output_path(self, template: str, **fields) -> Path:
        """Fill a path template ({model_name}, ...) and anchor it at base_experiment_path."""
        text = template.format(model_name=self.model_name, **fields)
        path = Path(text)
        return path if path.is_absolute() else Path(self.base_experiment_path) / path

    @property
    def run_dir(self) -> Path:
        return self.output_path(self.logs_save_path)

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_path(self.model_save_path, epoch=0).parent

    @property
    def checkpoint_template(self) -> str:
        return Path(self.model_save_path).name
