"""One validation pass: time and batch limits both honoured, metrics reduced over ranks."""

from __future__ import annotations

import math

import torch
from bioloop.engine import progress
from bioloop.engine.loader import validation_loader
from bioloop.engine.runtime import all_gather_objects, to_device


def validate(trainer) -> tuple[dict[str, float], dict]:
    """Run the task's validation over the validation set; returns (metrics, figures)."""
    cfg, rt, task = trainer.cfg, trainer.rt, trainer.task
    model = trainer.model
    dataset = trainer.val_set
    batch_size = cfg.validation_batch_size or cfg.batch_size
    loader = getattr(trainer, "_val_loader", None)
    if loader is None:  # built once per run: its workers persist across validation passes
        loader = trainer._val_loader = validation_loader(
            dataset, batch_size=batch_size, num_workers=cfg.num_workers, rank=rt.rank, world_size=rt.world_size,
            collate_fn=task.collate, pin_memory=rt.device.type == "cuda")
    limit = len(loader)
    if cfg.validation_batch_limit is not None:
        limit = min(limit, math.ceil(cfg.validation_batch_limit / rt.world_size))
    bar = progress.ValidationBar(limit, time_limit=cfg.validation_time_limit, enabled=trainer.show_bars)
    parts, figures = [], {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index, batch in enumerate(loader):
                if index >= limit or bar.expired():
                    break
                batch = to_device(batch, rt.device)
                with rt.autocast():
                    parts.append(task.validation_step(model, batch, trainer.loss_fn, cfg))
                    if index == 0 and rt.is_main and cfg.logger.figures and trainer.logger is not None:
                        figures = task.figures(model, batch, cfg)
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    gathered = [part for rank_parts in all_gather_objects(rt, parts) for part in rank_parts]
    if not gathered:
        return {}, figures
    return task.reduce_validation(gathered, cfg), figures
