"""What a checkpoint holds, and where a run starts: fresh, resumed, or fine-tuned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioloop._version import __version__
from bioloop.config.resolved import to_plain
from bioloop.engine.checkpoint import apply_model_state, load_checkpoint, load_weights
from bioloop.engine.rng import capture_rng_state, restore_rng_state
from bioloop.errors import CheckpointError


def training_state(trainer, *, full: bool = False) -> dict[str, Any]:
    """Everything needed to continue exactly where the run is now.

    With ``save_optimizer_state = False`` (and not ``full``: the interrupt checkpoint always is) the
    optimizer's per-parameter state is left out; its hyperparameters (param_groups: learning rates,
    betas, ...) stay, so a resume keeps the learning rate and the schedule and restarts only the
    moment/momentum buffers. ``optimizer_state_saved`` records which it is."""
    p = trainer.progress
    optimizer = trainer.optimizer.state_dict()
    keep = full or getattr(trainer.cfg, "save_optimizer_state", True)
    if not keep:
        optimizer = {"state": {}, "param_groups": optimizer["param_groups"]}
    return {
        "model": trainer.model.state_dict(),
        "optimizer": optimizer,
        "optimizer_state_saved": bool(keep),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "scaler": trainer.scaler.state_dict(),
        "epoch": p.epoch,
        "batch_in_epoch": p.batch_in_epoch,
        "step": p.step,
        "iteration": p.iteration,
        "skipped": p.skipped,
        "metrics": dict(p.last_metrics),
        "sampler": {"epoch": p.epoch, "start_batch": p.batch_in_epoch, "seed": trainer.cfg.random_seed,
                    "batch_size": trainer.cfg.batch_size, "world_size": trainer.rt.world_size},
        "selection": trainer.selection.state_dict(),
        "rng": capture_rng_state(),
        "config": to_plain(trainer.cfg),
        "task": trainer.cfg.task,
        "model_name": trainer.cfg.model_name,
        "extras": trainer.task.checkpoint_extras(trainer.cfg),
        "bioloop_version": __version__,
    }


WEIGHTS_KEYS = ("model", "epoch", "step", "metrics", "config", "task", "model_name", "extras", "bioloop_version")


def weights_state(state: dict[str, Any]) -> dict[str, Any]:
    """The weights-only export of a training state: what predict and model_to_load need, no
    optimizer, scheduler, scaler, sampler or RNG state (so not resumable)."""
    return {k: state[k] for k in WEIGHTS_KEYS if k in state}


def resume_command(cfg) -> str:
    """The ``bioloop train`` command that continues this run from its latest checkpoint.

    The original ``-s`` overrides are repeated except ``load_model`` ones: a ``-s load_model=None``
    (or a file, or 'best') would start over instead of resuming. When the run did not already
    resume from 'latest', ``-s load_model=latest`` is added, which also wins over the file's value.
    """
    import shlex

    source = cfg.source
    config = str(source.path) if source and source.path else "CONFIG"
    kept = []
    dropped = False
    for text in (source.overrides if source else ()):
        if text.split("=", 1)[0].strip() == "load_model":
            dropped = True
        else:
            kept.append(text)
    if dropped or cfg.load_model != "latest":
        kept.append("load_model=latest")
    return " ".join(["bioloop", "train", shlex.quote(config), *(f"-s {shlex.quote(o)}" for o in kept)])


def find_resume_checkpoint(cfg, manager, where: str) -> Path | None:
    """The checkpoint ``load_model`` asks for, or None to start fresh."""
    choice = cfg.load_model
    if choice is None:
        earlier = manager.entries() if manager.manifest_path.exists() else []
        if earlier:
            raise CheckpointError.at(
                f"{where}: load_model", f"None starts a fresh run, but {manager.manifest_path.parent} holds "
                f"{len(earlier)} checkpoint(s) of an earlier run that it would overwrite", got=None,
                fix="resume with load_model = 'latest', or give this run its own model_save_path, "
                    "or delete the old checkpoints")
        return None
    if choice == "latest":
        return manager.latest()
    if choice == "best":
        return manager.best()
    path = Path(choice)
    if not path.is_absolute():  # relative to the config file's folder, like every other path
        folder = cfg.source.path.parent if cfg.source and cfg.source.path else Path.cwd()
        path = folder / path
    if not path.is_file():
        raise CheckpointError.at(f"{where}: load_model", "checkpoint file not found", got=str(path),
                                 fix="give an existing file, 'latest', 'best' or None")
    return path


def load_start_state(trainer) -> Path | None:
    """Resume from load_model, else start from model_to_load, else from scratch. Returns the file used."""
    cfg, where = trainer.cfg, trainer.where
    path = find_resume_checkpoint(cfg, trainer.checkpoints, where)
    if path is None:
        if cfg.model_to_load:
            weights = load_weights(cfg.model_to_load, map_location=trainer.rt.device)
            apply_model_state(trainer.model, weights, path=cfg.model_to_load)
            trainer.say(f"starting from the weights in {cfg.model_to_load} (epoch 0)")
            return Path(cfg.model_to_load)
        if cfg.load_model in ("latest", "best"):
            trainer.say(f"no checkpoint in {cfg.checkpoint_dir}: starting from scratch")
        return None
    state = load_checkpoint(path, map_location=trainer.rt.device)
    _check_compatible(state, cfg, path)
    apply_model_state(trainer.model, state["model"], path=path)
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError.at(str(path), f"optimizer state does not fit this optimizer ({exc})",
                                 fix="resume with the optimizer the run was started with, or use model_to_load to "
                                     "start a new run from these weights") from None
    if trainer.scheduler is not None and state.get("scheduler") is not None and cfg.load_scheduler_state_dict:
        trainer.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    p = trainer.progress
    p.epoch = int(state["epoch"])
    p.batch_in_epoch = int(state.get("batch_in_epoch", 0))
    p.step = int(state["step"])
    p.iteration = int(state.get("iteration", 0))
    p.skipped = int(state.get("skipped", 0))
    p.last_metrics = dict(state.get("metrics") or {})
    trainer.selection.load_state_dict(state.get("selection") or {})
    sampler = state.get("sampler") or {}
    if sampler.get("world_size", trainer.rt.world_size) != trainer.rt.world_size or sampler.get(
        "batch_size", cfg.batch_size
    ) != cfg.batch_size:
        trainer.say(f"note: {path} was written with batch_size={sampler.get('batch_size')} and "
                    f"{sampler.get('world_size')} process(es); batches after resuming differ from the original run")
    restore_rng_state(state["rng"])
    if state.get("optimizer_state_saved") is False:
        trainer.say(f"note: {path} was saved with save_optimizer_state = False: the optimizer's per-parameter state "
                    "(e.g. Adam moments) restarts from zero; weights, learning rate, schedule, RNG and data order "
                    "continue, so the run will not equal an uninterrupted one")
    where_in = f"epoch {p.epoch + 1}" + (f", batch {p.batch_in_epoch + 1}" if p.batch_in_epoch else "")
    trainer.say(f"resuming from {path} at {where_in} ({p.step} optimizer steps done)")
    return path


def _check_compatible(state: dict, cfg, path: Path) -> None:
    for key in ("epoch", "step", "optimizer", "rng"):
        if key not in state:
            raise CheckpointError.at(str(path), f"not a resumable bioloop checkpoint (no '{key}')",
                                     fix="use model_to_load to start from these weights instead")
    if state.get("task") not in (None, cfg.task):
        raise CheckpointError.at(str(path), f"checkpoint is for task '{state.get('task')}', this config trains "
                                 f"'{cfg.task}'", fix="point load_model at a checkpoint of this task")
