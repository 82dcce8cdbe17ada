"""The trained model a prediction runs: which checkpoint, loaded strictly into the task's model.

Shared by ``bioloop predict`` (through ``api.py``) and by tasks that predict after training
(pose's test videos), so a task never imports the top-level ``api``.
"""

from __future__ import annotations

from pathlib import Path

from bioloop.errors import CheckpointError


def trained_checkpoint(cfg, checkpoint: str | None = None) -> Path:
    """The checkpoint prediction uses: the given file, else the run's best, else its latest."""
    from bioloop.engine.checkpoint import CheckpointManager

    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError.at(str(path), "checkpoint file not found", fix="check --checkpoint")
        return path
    manager = CheckpointManager(cfg.checkpoint_dir, model_name=cfg.model_name, filename_template=cfg.checkpoint_template)
    path = manager.best() or manager.latest()
    if path is None:
        raise CheckpointError.at(str(cfg.checkpoint_dir), "no trained checkpoint found",
                                 fix="train first (`bioloop train CONFIG`) or pass --checkpoint FILE; "
                                     "bioloop never predicts with untrained weights")
    return path


def load_trained_model(cfg, checkpoint: str | None = None, *, device: str | None = None):
    """(model with trained weights on its device, checkpoint extras, checkpoint path)."""
    from bioloop.engine.checkpoint import apply_model_state, load_checkpoint
    from bioloop.engine.runtime import resolve_device
    from bioloop.tasks import get_task

    task = get_task(cfg.task)
    path = trained_checkpoint(cfg, checkpoint)
    target = resolve_device(device if device is not None else cfg.device)
    state = load_checkpoint(path, map_location=target)
    if state.get("task") not in (None, cfg.task):
        raise CheckpointError.at(str(path), f"checkpoint is for task '{state.get('task')}', not '{cfg.task}'")
    model = task.build_model(cfg)
    apply_model_state(model, state["model"], path=path)
    return model.to(target).eval(), dict(state.get("extras") or {}), path
