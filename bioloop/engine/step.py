"""The module DistributedDataParallel wraps: its forward is the task's whole training step.

Lightning redirects DDP's forward to ``training_step`` the same way. DDP only sees one call per
iteration (this module's forward), so inside it the task may run the model any number of times,
on any batch structure (pose's labeled and unlabeled frames, tracking's clips of several videos),
and the gradients of everything the step touched are reduced once, at backward.
"""

from __future__ import annotations

import torch


class TrainingStep(torch.nn.Module):
    """``forward(batch)`` is ``task.training_step(model, batch, loss_fn, cfg)`` with the plain model."""

    def __init__(self, task, model: torch.nn.Module, loss_fn, cfg):
        super().__init__()
        self.model = model  # the only registered submodule: DDP reduces exactly the model's gradients
        # plain attributes, not submodules: a loss module's buffers are not the model's state
        object.__setattr__(self, "_task", task)
        object.__setattr__(self, "_loss_fn", loss_fn)
        object.__setattr__(self, "_cfg", cfg)

    def forward(self, batch) -> dict[str, torch.Tensor]:
        return self._task.training_step(self.model, batch, self._loss_fn, self._cfg)


def wrap_for_training(step: TrainingStep, runtime) -> torch.nn.Module:
    """``step`` itself on one process; under torch.distributed, DDP around it (one device per process)."""
    if not runtime.distributed:
        return step
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        step, device_ids=ids, find_unused_parameters=step._task.find_unused_parameters)
