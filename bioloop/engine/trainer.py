"""The training loop every task shares.

Order inside an iteration (``_iteration``): data -> forward under autocast -> loss and
accumulation -> backward -> at each accumulation boundary: unscale, clip once, step,
zero_grad(set_to_none) -> scheduler per its interval -> log -> stop checks.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from bioloop.config.record import update_run_json, write_run_records
from bioloop.config.resolved import to_plain
from bioloop.engine import progress
from bioloop.engine.checkpoint import CheckpointManager
from bioloop.engine.logging import RunLogger
from bioloop.engine.optim import build_optimizer, build_scheduler, current_lrs, step_scheduler
from bioloop.engine.resume import load_start_state, resume_command, training_state, weights_state
from bioloop.engine.rng import seed_everything
from bioloop.engine.runtime import Runtime, all_gather_objects, barrier, to_device
from bioloop.engine.loader import TrainLoader
from bioloop.engine.sampling import batches_per_epoch
from bioloop.engine.selection import Selection
from bioloop.engine.signals import StopRequest
from bioloop.engine.step import TrainingStep, wrap_for_training
from bioloop.engine.validation import validate
from bioloop.errors import TrainingError, TrainingInterrupted


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches done in the current epoch (non-zero only after an interrupt)
    step: int = 0  # optimizer steps
    iteration: int = 0  # batches seen
    skipped: int = 0  # batches skipped for a non-finite loss
    last_metrics: dict = field(default_factory=dict)


class Trainer:
    """One training run of one process (rank)."""

    def __init__(self, cfg, task, runtime: Runtime, *, quiet: bool = False, echo=None):
        self.cfg = cfg
        self.task = task
        self.rt = runtime
        self.where = cfg.source.name if cfg.source else "config"
        self.show_bars = runtime.is_main and progress.progress_enabled(quiet)
        self._echo = echo if echo is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.quiet = quiet

    def say(self, message: str) -> None:
        if self.rt.is_main and not self.quiet:
            self._echo(message)

    # ---------------------------------------------------------------- set-up
    def setup(self) -> None:
        cfg, task, rt = self.cfg, self.task, self.rt
        seed_everything(cfg.random_seed, deterministic=cfg.deterministic)
        self.model = task.build_model(cfg).to(rt.device)
        self.loss_fn = task.build_loss(cfg)
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn = self.loss_fn.to(rt.device)
        self.train_set, self.val_set = task.build_datasets(cfg)
        params = task.parameter_groups(self.model, cfg)  # e.g. a backbone with its own learning rate
        self.optimizer = build_optimizer(cfg.optimizer, params, learning_rate=cfg.learning_rate, where=self.where)
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, where=self.where)
        self.scaler = rt.grad_scaler()
        self.checkpoints = CheckpointManager(
            cfg.checkpoint_dir, model_name=cfg.model_name, filename_template=cfg.checkpoint_template,
            max_snapshots=cfg.max_snapshots,
        )
        self.selection = Selection(cfg, task)
        self.progress = Progress()
        self.resumed_from = load_start_state(self)
        # the module DDP wraps is the whole training step (model + loss), not the bare model
        self.step_module = wrap_for_training(TrainingStep(task, self.model, self.loss_fn, cfg), rt)
        self.logger = RunLogger(
            cfg.run_dir, enabled=rt.is_main, tensorboard=cfg.logger.tensorboard, wandb=cfg.logger.wandb,
            run_name=cfg.model_name, where=self.where,
        )
        processes = all_gather_objects(rt, rt.describe())  # every rank takes part; rank 0 writes
        if rt.is_main:
            write_run_records(
                cfg.run_dir,
                config_path=cfg.source.path if cfg.source else None,
                resolved=to_plain(cfg),
                extra={
                    "task": cfg.task, "world_size": rt.world_size, "device": str(rt.device), "processes": processes,
                    "precision": rt.precision, "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                    "overrides": list(cfg.source.overrides) if cfg.source else [],
                },
            )

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        self.setup()
        cfg, p = self.cfg, self.progress
        if p.epoch >= cfg.epochs:
            self.say(f"nothing to do: the run already completed {p.epoch}/{cfg.epochs} epochs")
        with StopRequest() as self.stop:
            try:
                if p.iteration == 0 and p.epoch < cfg.epochs \
                        and self.task.before_training(cfg, self.train_set, self.logger, self.say) is False:
                    return self._finish()
                while p.epoch < cfg.epochs:
                    self._train_epoch(p.epoch)
                    p.epoch += 1
                    p.batch_in_epoch = 0
                    if self._end_of_epoch(p.epoch - 1):
                        self.say(f"early stopping after epoch {p.epoch}: {self.selection.early_stop_reason}")
                        break
                return self._finish()
            finally:
                self.logger.close()

    def _loader(self, epoch: int):
        """The batches of ``epoch`` from the run's one training DataLoader (its workers persist)."""
        cfg, rt = self.cfg, self.rt
        set_epoch = getattr(self.train_set, "set_epoch", None)
        if callable(set_epoch):  # e.g. a patch buffer refreshed every few epochs (workers get it per item)
            set_epoch(epoch)
        if getattr(self, "_train_loader", None) is None:
            self._train_loader = TrainLoader(
                self.train_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers, seed=cfg.random_seed,
                iterations_per_epoch=cfg.iterations_per_epoch, rank=rt.rank, world_size=rt.world_size,
                collate_fn=self.task.collate, pin_memory=rt.device.type == "cuda",
            )
        return self._train_loader.epoch(epoch, self.progress.batch_in_epoch)

    def _train_epoch(self, epoch: int) -> None:
        cfg, p = self.cfg, self.progress
        n_batches = batches_per_epoch(
            len(self.train_set), iterations_per_epoch=cfg.iterations_per_epoch,
            batch_size=cfg.batch_size, world_size=self.rt.world_size,
        )
        self.step_module.train()
        bar = progress.train_bar(n_batches, epoch=epoch + 1, epochs=cfg.epochs, enabled=self.show_bars)
        bar.update(p.batch_in_epoch)
        window = {"loss": 0.0, "count": 0, "wait": 0.0, "start": time.perf_counter(), "samples": 0, "terms": {}}
        fetch_start = time.perf_counter()
        for batch_index, batch in enumerate(self._loader(epoch), start=p.batch_in_epoch):
            window["wait"] += time.perf_counter() - fetch_start
            boundary = (batch_index + 1) % cfg.gradient_accumulation_steps == 0 or batch_index + 1 == n_batches
            loss = self._iteration(batch, boundary)
            p.iteration += 1
            p.batch_in_epoch = batch_index + 1
            if loss is not None:
                window["loss"] += loss
                window["count"] += 1
                for name, value in self._terms.items():  # further scalars of training_step
                    window["terms"][name] = window["terms"].get(name, 0.0) + value
            window["samples"] += cfg.batch_size * self.rt.world_size
            bar.update(1)
            if p.iteration % cfg.logger.log_every_n_steps == 0:
                self._log_window(window, epoch, bar)
            if boundary and self._stop_agreed:
                bar.close()
                self._interrupt(epoch)
            fetch_start = time.perf_counter()
        if window["count"]:
            self._log_window(window, epoch, bar)
        bar.close()

    def _iteration(self, batch, boundary: bool) -> float | None:
        """One batch; returns its loss (None when skipped).

        Host synchronisation: one device-to-host copy per iteration (loss, logged terms and the
        finite flag together); under torch.distributed one all-reduce per iteration, of a tensor on
        the training device, carrying both the non-finite flag and the stop request.
        """
        cfg, rt = self.cfg, self.rt
        batch = to_device(batch, rt.device)
        sync = boundary or not rt.distributed
        context = self.step_module.no_sync() if not sync else contextlib.nullcontext()
        with context:
            with rt.autocast():
                out = self.step_module(batch)
            loss = out["loss"]
            names = [k for k, v in out.items() if k != "loss" and torch.is_tensor(v) and v.numel() == 1]
            values, nonfinite, self._stop_agreed = self._host_values(loss, [out[k] for k in names])
            self._terms = dict(zip(names, values[1:]))
            if nonfinite:
                if cfg.on_nonfinite_loss == "error":
                    raise TrainingError.at(
                        self.where, f"non-finite loss at epoch {self.progress.epoch + 1}, "
                        f"iteration {self.progress.iteration + 1}", got=values[0],
                        fix="lower learning_rate, set max_grad_norm, check the data; nothing was saved for this step "
                        "(set on_nonfinite_loss = 'skip' to skip such batches)",
                    )
                self.progress.skipped += 1
            else:
                self.scaler.scale(loss / cfg.gradient_accumulation_steps).backward()
        if boundary:
            # e.g. drop a frozen backbone's gradients (DDP-safe freezing)
            self.task.before_optimizer_step(self.model, self.progress.epoch, cfg)
            if cfg.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.progress.step += 1
            if self.scheduler is not None and cfg.scheduler_interval == "step":
                step_scheduler(self.scheduler)
        return None if nonfinite else values[0]

    def _host_values(self, loss: torch.Tensor, terms: list[torch.Tensor]) -> tuple[list[float], bool, bool]:
        """(loss and term values, whether any rank's loss is non-finite, whether any rank asked to stop).

        Everything is stacked on the training device and copied to the host once. Under
        torch.distributed the two flags are all-reduced (MAX) as one tensor on that same device, the
        one the process group's backend serves for it (NCCL for CUDA, gloo for CPU).
        """
        device = loss.device
        local = [loss.detach().float().reshape(1), *(t.detach().float().reshape(1).to(device) for t in terms)]
        values = torch.cat(local)
        flags = (~torch.isfinite(values[:1])).float()
        if self.rt.distributed:  # every rank must take the same branch and stop at the same boundary
            requested = torch.tensor([1.0 if self.stop.requested else 0.0], device=device)
            flags = torch.cat([flags, requested])
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            host = torch.cat([values, flags]).tolist()
            return host[:len(local)], host[-2] > 0, host[-1] > 0
        host = torch.cat([values, flags]).tolist()
        return host[:len(local)], host[-1] > 0, self.stop.requested

    def _log_window(self, window: dict, epoch: int, bar) -> None:
        elapsed = max(time.perf_counter() - window["start"], 1e-9)
        values = {
            "train/lr": current_lrs(self.optimizer)[0],
            "train/samples_per_s": window["samples"] / elapsed,
            "train/data_wait_fraction": min(1.0, window["wait"] / elapsed),
            "train/optimizer_steps": float(self.progress.step),
        }
        if window["count"]:
            values["train/loss"] = window["loss"] / window["count"]
            values.update({f"train/{k}": v / window["count"] for k, v in window["terms"].items()})
        if self.progress.skipped:
            values["train/skipped_batches"] = float(self.progress.skipped)
        self.logger.scalars(values, step=self.progress.iteration, epoch=epoch + 1)
        bar.set_postfix(loss=f"{values.get('train/loss', math.nan):.4g}", lr=f"{values['train/lr']:.2g}",
                        sps=f"{values['train/samples_per_s']:.1f}", refresh=False)
        window.update(loss=0.0, count=0, wait=0.0, start=time.perf_counter(), samples=0, terms={})

    def _interrupt(self, epoch: int):
        signum = self.stop.signum or 2
        path = None
        if self.rt.is_main:
            path = self.checkpoints.save_interrupt(training_state(self, full=True), epoch=epoch,
                                                   step=self.progress.step)
        barrier(self.rt)
        raise TrainingInterrupted(
            f"{self.where}: training interrupted by signal {signum} in epoch {epoch + 1} after "
            f"{self.progress.batch_in_epoch} batches; checkpoint saved to {path}; resume with "
            f"`{resume_command(self.cfg)}`", signum,
        )

    # ---------------------------------------------------------------- epoch end
    def _end_of_epoch(self, epoch: int) -> bool:
        """Validate, step the scheduler, keep best checkpoints, save; True to stop early."""
        cfg = self.cfg
        number = epoch + 1
        metrics: dict[str, float] = {}
        if self.rt.distributed:  # running statistics (BatchNorm) follow rank 0, like DDP's forward does
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer.data, src=0)
        last = number == cfg.epochs
        if self.val_set is not None and (number % cfg.validate_every == 0 or last):
            metrics, figures = validate(self)
            self.progress.last_metrics = metrics
            self.logger.scalars({f"val/{k}": v for k, v in metrics.items()}, step=self.progress.iteration, epoch=number)
            for name, fig in figures.items():
                self.logger.figure(f"val/{name}", fig, step=self.progress.iteration)
            self.say(f"epoch {number}/{cfg.epochs}: " + _summary(metrics, self.selection.key))
        if self.scheduler is not None and cfg.scheduler_interval == "epoch":
            step_scheduler(self.scheduler, metrics.get(self.selection.key))
        improved = self.selection.update(metrics, epoch=number)
        stop = self.selection.should_stop(epoch=number)
        if self.rt.is_main:
            state = training_state(self)
            for metric in improved:
                self.checkpoints.save_best(
                    state, metric=metric, value=metrics[metric], epoch=number, primary=metric == self.selection.key
                )
                if cfg.save_best_weights and metric == self.selection.key:
                    self.checkpoints.save_best_weights(weights_state(state))
            if number % cfg.save_every_n_epochs == 0 or last or stop:
                self.checkpoints.save_epoch(state, epoch=number, step=self.progress.step, metrics=metrics)
        barrier(self.rt)
        return stop

    def _finish(self) -> dict[str, Any]:
        checksums = all_gather_objects(self.rt, _weights_checksum(self.model))
        in_sync = all(c == checksums[0] for c in checksums)
        result = {
            "epochs_completed": self.progress.epoch,
            "optimizer_steps": self.progress.step,
            "iterations": self.progress.iteration,
            "last_metrics": self.progress.last_metrics,
            "best": self.selection.best,
            "key_metric": self.selection.key,
            "run_dir": str(self.cfg.run_dir),
            "checkpoint_dir": str(self.cfg.checkpoint_dir),
            "best_checkpoint": str(self.checkpoints.best()) if self.checkpoints.best() else None,
            "rank_weight_checksums": checksums,
        }
        if self.rt.is_main:
            self._log_hparams(result)
            update_run_json(self.cfg.run_dir, status="completed", end_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            result=to_plain(result))
        if not in_sync:
            raise TrainingError.at(self.where, "model weights differ between ranks after training", got=checksums,
                                   fix="this is a bug in distributed training; please report it")
        return result

    def _log_hparams(self, result) -> None:
        cfg = self.cfg
        hp = {"model_name": cfg.model_name, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
              "epochs": cfg.epochs, "precision": cfg.precision, "world_size": self.rt.world_size,
              "gradient_accumulation_steps": cfg.gradient_accumulation_steps}
        best = {f"hparam/best_{k}": v["value"] for k, v in self.selection.best.items()}
        self.logger.hparams(hp, best or {"hparam/epochs_completed": float(result["epochs_completed"])})


def _summary(metrics: dict[str, float], key: str) -> str:
    shown = {k: v for k, v in metrics.items() if "/" not in k}
    text = ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
    if key in metrics and key not in shown:  # e.g. pose's pixel_error/mean: show its own value
        text += f", {key}={metrics[key]:.4g}"
    return text + (f" (key metric {key})" if key in metrics else "")


def _weights_checksum(model: torch.nn.Module) -> str:
    """A checksum of every parameter and buffer, to compare ranks."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train(cfg, *, quiet: bool = False, echo=None) -> dict[str, Any]:
    """Train ``cfg``'s task with the shared engine; returns a summary of the run."""
    from bioloop.engine.runtime import init_runtime, shutdown
    from bioloop.tasks import get_task

    task = get_task(cfg.task)
    runtime = init_runtime(cfg.device, cfg.precision, where=cfg.source.name if cfg.source else "")
    try:
        result = Trainer(cfg, task, runtime, quiet=quiet, echo=echo).run()
        # every rank: further engine runs all processes take part in (pose's top-down detector, DDP)
        result.update(task.follow_up_training(cfg, result, runtime, quiet=quiet) or {})
        if runtime.is_main:  # e.g. predict the test videos with the best model
            result.update(task.after_training(cfg, result, quiet=quiet) or {})
        return result
    finally:
        shutdown(runtime)
