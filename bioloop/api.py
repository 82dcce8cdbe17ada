"""Python entry points: the same operations as the CLI, as function calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable



def load_config(path, overrides: Iterable[str] = (), *, echo=None):
    """Read a config file (bioloop's Python, or a Lightning Pose/DeepLabCut/GTR YAML) and validate it.

    Notes on another tool's keys (what bioloop does differently) go to ``echo`` (default: stderr)."""
    from bioloop.config.loader import load_config as _load

    return _load(path, tuple(overrides), echo=echo)


def check_config(cfg) -> list[str]:
    """What training would refuse at its start, checked now: files the settings name exist and the task's
    model builds (``task.check_config``; on the meta device, nothing downloaded). One message per problem."""
    from bioloop.tasks import get_task

    where = cfg.source.name if getattr(cfg, "source", None) else "config"
    problems = []
    if cfg.model_to_load and "://" not in str(cfg.model_to_load) and not Path(cfg.model_to_load).is_file():
        problems.append(f"{where}: model_to_load: file not found (got '{cfg.model_to_load}'); check the path")
    problems += get_task(cfg.task).check_config(cfg)
    return [_as_written(cfg, where, p) for p in problems]


def _as_written(cfg, where: str, message: str) -> str:
    """``<file>: labels_file: ...`` -> ``<file>: line 10: data.csv_file: ...`` when the file spelled it so."""
    from bioloop.config.spellings import display

    names = dict(cfg.source.names) if getattr(cfg, "source", None) else {}
    head = f"{where}: "
    if not names or not message.startswith(head):
        return message
    key, sep, rest = message[len(head):].partition(": ")
    if not sep or " " in key:
        return message
    return f"{head}{display(names, key)}: {rest}"


def _as_config(cfg, overrides: Iterable[str] = ()):
    if isinstance(cfg, (str, Path)):
        return load_config(cfg, overrides)
    if overrides:
        raise TypeError("overrides apply to config files; pass a path, or change the settings object itself")
    return cfg


def train(cfg, overrides: Iterable[str] = (), *, quiet: bool = False) -> dict[str, Any]:
    """Train the task a config describes; returns a summary (epochs, best metrics, paths)."""
    from bioloop.engine.trainer import train as _train

    return _train(_as_config(cfg, overrides), quiet=quiet)


def trained_checkpoint(cfg, checkpoint: str | None = None) -> Path:
    """The checkpoint prediction uses: the given file, else the run's best, else its latest."""
    from bioloop.engine.trained import trained_checkpoint as _trained

    return _trained(cfg, checkpoint)


def load_trained_model(cfg, checkpoint: str | None = None, *, device: str | None = None):
    """(model with trained weights on its device, checkpoint extras, checkpoint path)."""
    from bioloop.engine.trained import load_trained_model as _load

    return _load(cfg, checkpoint, device=device)


def predict(cfg, overrides: Iterable[str] = (), *, checkpoint: str | None = None, device: str | None = None,
            **options) -> Path:
    """Run the trained model over new data (options are the task's: input, output, roi, ...).

    Under torchrun (``bioloop predict --devices N``) every process joins the group, takes its own
    device and predicts its share of the blocks.
    """
    import os

    from bioloop.tasks import get_task

    cfg = _as_config(cfg, overrides)
    runtime = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from bioloop.engine.runtime import init_runtime

        runtime = init_runtime(device if device is not None else cfg.device, "32",
                               where=cfg.source.name if cfg.source else "")
        device = str(runtime.device)
    try:
        model, extras, path = load_trained_model(cfg, checkpoint, device=device)
        extras = {**extras, "checkpoint": str(path)}
        if runtime is not None:
            options = {**options, "rank": runtime.rank, "world_size": runtime.world_size}
        return get_task(cfg.task).predict(cfg, model, extras=extras, **options)
    finally:
        if runtime is not None:
            from bioloop.engine.runtime import shutdown

            shutdown(runtime)


def evaluate(cfg, overrides: Iterable[str] = (), **options) -> dict[str, Any]:
    """Score predictions against ground truth (options are the task's: prediction, truth, ...)."""
    from bioloop.tasks import get_task

    cfg = _as_config(cfg, overrides)
    return get_task(cfg.task).evaluate(cfg, **options)


def process(cfg, overrides: Iterable[str] = (), **options) -> Path:
    """Post-process predictions (segmentation: thresholds, components, watershed; options input, output, ...)."""
    from bioloop.tasks import get_task

    cfg = _as_config(cfg, overrides)
    return get_task(cfg.task).process(cfg, **options)  # tasks without the step refuse with a ConfigError
