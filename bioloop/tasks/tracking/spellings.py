"""DREEM/GTR's tracking config (a Lightning ``Trainer`` underneath) mapped onto bioloop's settings.

The rows follow Lightning 2's documented meanings: ``Trainer`` arguments, the ``EarlyStopping`` and
``ModelCheckpoint`` callbacks (with *their* defaults: patience 3, mode "min", save_top_k 1) and the
loggers GTR builds from ``logging``. GTR's ``model`` section is bioloop's ``gtr``; ``optimizer`` and
``scheduler`` ``{"name": ..., **kwargs}`` become specs ``{"type": ..., "params": {...}}``. Sections
that GTR and bioloop spell the same (``tracker``, ``loss``, ``runner``, ``dataset``, ``view_batch``)
need no row. Metric names may carry Lightning's ``val_`` prefix.
"""

from __future__ import annotations

from bioloop.config.spellings import ANY, Row, Table, Unsupported


def metric(name):
    """Lightning logs ``val_num_switches``; bioloop's validation reports ``num_switches``."""
    return name[4:] if isinstance(name, str) and name.startswith("val_") else name


def _precision(value, ctx):
    text = str(value)
    table = {"32": "32", "32-true": "32", "16": "16", "16-mixed": "16", "bf16": "bf16", "bf16-mixed": "bf16"}
    if text not in table:
        raise Unsupported("bioloop trains in float32 with optional autocast: use 32, 16-mixed or bf16-mixed "
                          "('16-true'/'bf16-true' cast the weights themselves and '64' is double precision)")
    return table[text]


def _clip(value, ctx):
    algorithm = ctx.get("trainer.gradient_clip_algorithm", "norm")
    if algorithm not in ("norm", None):
        raise Unsupported("bioloop clips the gradient norm only; remove gradient_clip_algorithm: value")
    return None if value in (None, 0, 0.0) else value  # Lightning: 0 / None means no clipping


def _limit(kind):
    def convert(value, ctx):
        if value is None or (isinstance(value, float) and value == 1.0):
            return None  # the whole set, Lightning's default
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise Unsupported(f"bioloop limits {kind} by a number of batches; write an int, or 1.0 for all "
                          "(a fraction of the set has no counterpart)")
    return convert


def _log_every(value, ctx):
    # Lightning counts optimizer steps, bioloop iterations (batches): the same unless accumulating
    steps = ctx.get("trainer.accumulate_grad_batches", 1) or 1
    return value * steps if isinstance(value, int) and isinstance(steps, int) else value


def _epochs(value, ctx):
    if value == -1:
        raise Unsupported("bioloop trains a fixed number of epochs; write the number (Lightning's -1 is endless)")
    return value


def _validate_every(value, ctx):
    if value is None:
        raise Unsupported("bioloop validates every N epochs; write N (val_check_interval steps have no "
                          "counterpart)")
    return value


def _accelerator(value, ctx):
    devices = ctx.get("trainer.devices", "auto")
    kind = {"auto": None, "cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}.get(value, "?")
    if kind == "?":
        raise Unsupported("use auto, cpu, gpu/cuda or mps")
    if kind == "cuda" and isinstance(devices, list) and len(devices) == 1:
        return {"device": f"cuda:{devices[0]}"}
    return {} if kind is None else {"device": kind}


def _devices(value, ctx):
    if value in ("auto", 1, "1", -1, None) or (isinstance(value, list) and len(value) == 1):
        return {}  # one device (a listed GPU goes to `device` through `accelerator`)
    raise Unsupported("one process trains on one device here; train on N GPUs with "
                      "`bioloop train CONFIG --devices N` (DDP) and remove trainer.devices")


def _strategy(value, ctx):
    if value in ("auto", "ddp", None):
        return {}
    raise Unsupported("bioloop's multi-GPU training is DDP (`bioloop train --devices N`); use auto or ddp")


def _spec(value, ctx):
    """GTR's ``{"name": "Adam", "lr": 1e-4}`` -> the engine's ``{"type": "Adam", "params": {"lr": 1e-4}}``."""
    if not isinstance(value, dict) or "type" in value:
        return value
    rest = {k: v for k, v in value.items() if k != "name"}
    params = dict(rest.pop("params", None) or {})
    return {"type": value.get("name"), "params": {**rest, **params}}


def _model(value, ctx):
    out = {"gtr": value}
    if isinstance(value, dict) and value.get("ckpt_path"):
        out["load_model"] = value["ckpt_path"]  # GTR resumes training from ckpt_path
    return out


def _logger_type(value, ctx):
    rest = {k: v for k, v in (ctx.get("logging") or {}).items()
            if k not in ("logger_type", "save_dir", "name", "log_model")}
    if value == "TensorBoardLogger":
        out = {"logger.tensorboard": True}
    elif value == "CSVLogger":
        out = {"logger.tensorboard": False}  # metrics.csv is always written
    elif value == "WandbLogger":
        name, folder = ctx.get("logging.name"), ctx.get("logging.save_dir")
        return {"logger.wandb": {**rest, **({"name": name} if name else {}), **({"dir": folder} if folder else {})}}
    else:
        raise Unsupported("use TensorBoardLogger, CSVLogger or WandbLogger")
    return out  # W&B-only keys under another logger report themselves


def _save_dir(value, ctx):
    if ctx.get("logging.logger_type", "TensorBoardLogger") == "WandbLogger":
        return {}  # wandb.init's dir, written with logger_type
    name = ctx.get("logging.name")
    if name:
        return {"logs_save_path": f"{value}/{name}"}  # Lightning writes save_dir/name/version_N
    return {"logs_save_path": value}


def _logging_name(value, ctx):
    if not ctx.has("logging.save_dir") and ctx.get("logging.logger_type", "TensorBoardLogger") != "WandbLogger":
        return {"logs_save_path": f"lightning_logs/{value}"}
    return {}  # read together with save_dir / by the W&B logger


def _wandb_key(value, ctx):
    if ctx.get("logging.logger_type") != "WandbLogger":
        raise Unsupported("only WandbLogger takes this key")
    return {}  # passed to wandb.init by logger_type


def _monitor(value, ctx):
    names = [metric(m) for m in ([value] if isinstance(value, str) else list(value or []))]
    if not names:
        return {}
    mode = ctx.get("checkpointing.mode", "min")
    return {"key_metric": names[0], "key_metric_mode": mode, **({"monitor": names[1:]} if names[1:] else {})}


def _top_k(value, ctx):
    if value == -1:
        return {"max_snapshots": None}  # every checkpoint kept
    if value == 1:
        # Lightning keeps the single best file per monitored metric (+ last.ckpt with save_last);
        # bioloop keeps the best per metric and the newest epoch file, which resuming needs
        return {"max_snapshots": 1}
    raise Unsupported("bioloop keeps one best checkpoint per monitored metric, not the k best; use 1, or -1 "
                      "to keep every epoch file (or set max_snapshots: the k newest)")


def _weights_only(value, ctx):
    return {"save_optimizer_state": not value}


def _save_last(value, ctx):
    if value is False:
        ctx.note("bioloop always keeps the newest checkpoint, which resuming needs")
    return {}


def _dirpath(value, ctx):
    if value is None:
        return {}  # Lightning's default folder; bioloop's is model_save_path's default
    return {"model_save_path": f"{value}/{{model_name}}_{{epoch}}.pth"}


def _shuffle(expected):
    def convert(value, ctx):
        if value is not expected:
            raise Unsupported("training clips are always shuffled (seeded) and validation never is")
        return {}
    return convert


def _val_workers(value, ctx):
    if value != ctx.get("dataloader.train_dataloader.num_workers", 0):
        ctx.note(f"bioloop uses one num_workers for every loader: the training loader's "
                 f"({ctx.get('dataloader.train_dataloader.num_workers', 0)})")
    return {}


def _es_monitor(value, ctx):
    return metric(value)


_NO_EFFECT = "no effect on what is trained"

ROWS = (
    Row("model", None, convert=_model, meaning="the transformer's settings (bioloop's gtr section)"),
    Row("optimizer.name", "optimizer.type", meaning="torch.optim class name"),
    Row("optimizer.type", "optimizer.type", meaning="bioloop's own spelling"),
    Row("optimizer.params.*", "optimizer.params.*", meaning="bioloop's own spelling"),
    Row("optimizer.*", "optimizer.params.*", meaning="keyword arguments of the optimizer"),
    Row("scheduler.name", "scheduler.type", meaning="torch.optim.lr_scheduler class name"),
    Row("scheduler.type", "scheduler.type", meaning="bioloop's own spelling"),
    Row("scheduler.params.*", "scheduler.params.*", meaning="bioloop's own spelling"),
    Row("scheduler.*", "scheduler.params.*", meaning="keyword arguments of the scheduler"),
    # lightning.Trainer
    Row("trainer.max_epochs", "epochs", convert=_epochs, meaning="stop after this many epochs"),
    Row("trainer.min_epochs", "early_stopping.min_epochs", requires="early_stopping",
        meaning="early stopping may not stop before this epoch; without early stopping every run trains "
                "max_epochs anyway"),
    Row("trainer.check_val_every_n_epoch", "validate_every", convert=_validate_every,
        meaning="validate every N epochs"),
    Row("trainer.gradient_clip_val", "max_grad_norm", convert=_clip,
        meaning="clip the gradient norm (algorithm 'norm'); 0 or None: no clipping"),
    Row("trainer.gradient_clip_algorithm", accept=("norm", None), meaning="how gradients are clipped"),
    Row("trainer.accumulate_grad_batches", "gradient_accumulation_steps", meaning="batches per optimizer step"),
    Row("trainer.limit_train_batches", "iterations_per_epoch", convert=_limit("training"),
        meaning="batches per training epoch; 1.0 is the whole set"),
    Row("trainer.limit_val_batches", "validation_batch_limit", convert=_limit("validation"),
        meaning="batches per validation; 1.0 is the whole set"),
    Row("trainer.precision", "precision", convert=_precision, meaning="32-true, 16-mixed or bf16-mixed autocast"),
    Row("trainer.deterministic", "deterministic", meaning="deterministic algorithms"),
    Row("trainer.log_every_n_steps", "logger.log_every_n_steps", convert=_log_every,
        meaning="log training scalars every N optimizer steps"),
    Row("trainer.accelerator", None, convert=_accelerator, meaning="the device kind"),
    Row("trainer.devices", None, convert=_devices, meaning="how many devices one run uses"),
    Row("trainer.strategy", None, convert=_strategy, meaning="the distribution strategy"),
    Row("trainer.num_nodes", accept=(1,), meaning="multi-node runs start with torchrun --nnodes"),
    Row("trainer.default_root_dir", "base_experiment_path", meaning="folder relative output paths start from"),
    Row("trainer.fast_dev_run", accept=(False, 0), meaning="a debugging run of one batch"),
    Row("trainer.max_steps", accept=(-1, None), meaning="a step limit; bioloop stops by epochs"),
    Row("trainer.min_steps", accept=(None,), meaning="a step minimum"),
    Row("trainer.max_time", accept=(None,), meaning="a wall-clock limit"),
    Row("trainer.limit_test_batches", accept=(1.0, None), meaning="batches of Lightning's test loop"),
    Row("trainer.limit_predict_batches", accept=(1.0, None), meaning="batches of Lightning's predict loop"),
    Row("trainer.overfit_batches", accept=(0, 0.0), meaning="a debugging mode"),
    Row("trainer.val_check_interval", accept=(None, 1.0), meaning="validation inside an epoch"),
    Row("trainer.num_sanity_val_steps", meaning="validation batches run before training, " + _NO_EFFECT),
    Row("trainer.enable_checkpointing", accept=(True,), meaning="bioloop always writes checkpoints"),
    Row("trainer.enable_progress_bar", meaning="progress bars (bioloop: on at a terminal, --quiet hides them)"),
    Row("trainer.enable_model_summary", meaning="a printed model summary, " + _NO_EFFECT),
    Row("trainer.benchmark", accept=(None, False), meaning="cudnn autotuning"),
    Row("trainer.inference_mode", accept=(True,), meaning="validation without autograd"),
    Row("trainer.use_distributed_sampler", accept=(True,), meaning="bioloop always shards samples by rank"),
    Row("trainer.profiler", accept=(None,), meaning="a profiler"),
    Row("trainer.detect_anomaly", accept=(False,), meaning="autograd anomaly detection"),
    Row("trainer.sync_batchnorm", accept=(False,), meaning="synchronised BatchNorm"),
    Row("trainer.reload_dataloaders_every_n_epochs", accept=(0,), meaning="rebuilding loaders"),
    Row("trainer.barebones", accept=(False,), meaning="Lightning without its extras"),
    # torch DataLoaders
    Row("dataloader.train_dataloader.batch_size", "batch_size", meaning="clips per training batch"),
    Row("dataloader.train_dataloader.num_workers", "num_workers", meaning="DataLoader workers"),
    Row("dataloader.train_dataloader.shuffle", None, convert=_shuffle(True), meaning="shuffle training clips"),
    *(Row(f"dataloader.{split}_dataloader.pin_memory",
          meaning="page-locked batches, " + _NO_EFFECT + " (bioloop pins on CUDA)") for split in ("train", "val", "test")),
    *(Row(f"dataloader.{split}_dataloader.persistent_workers", meaning="keep workers between epochs, " + _NO_EFFECT)
      for split in ("train", "val", "test")),
    Row("dataloader.val_dataloader.batch_size", "validation_batch_size", meaning="clips per validation batch"),
    Row("dataloader.val_dataloader.shuffle", None, convert=_shuffle(False), meaning="shuffle validation"),
    Row("dataloader.val_dataloader.num_workers", None, convert=_val_workers, meaning="validation workers"),
    Row("dataloader.test_dataloader.batch_size",
        meaning="batches of GTR's test loop; bioloop's predict/evaluate read whole videos, " + _NO_EFFECT),
    Row("dataloader.test_dataloader.shuffle", accept=(False, None), meaning="shuffle test data"),
    Row("dataloader.test_dataloader.num_workers", meaning="test workers, " + _NO_EFFECT),
    # loggers
    Row("logging.logger_type", None, convert=_logger_type, default="TensorBoardLogger",
        meaning="TensorBoardLogger, CSVLogger or WandbLogger"),
    Row("logging.save_dir", None, convert=_save_dir, meaning="the logger's folder"),
    Row("logging.name", None, convert=_logging_name, meaning="the run's name (a sub-folder of save_dir)"),
    *(Row(f"logging.{key}", None, convert=_wandb_key, meaning="passed to wandb.init")
      for key in ("project", "entity", "group", "job_type", "notes", "tags", "id", "mode", "dir")),
    Row("logging.log_model", accept=(False,), meaning="uploading checkpoints to W&B"),
    # lightning.pytorch.callbacks.EarlyStopping
    Row("early_stopping.monitor", "early_stopping.metric", convert=_es_monitor, meaning="the metric watched"),
    Row("early_stopping.patience", "early_stopping.patience", default=3,
        meaning="validations without improvement before stopping (Lightning's default 3)"),
    Row("early_stopping.min_delta", "early_stopping.min_delta", default=0.0,
        meaning="an improvement must exceed this"),
    Row("early_stopping.mode", "early_stopping.mode", default="min", meaning="min or max (Lightning's default min)"),
    Row("early_stopping.verbose", meaning="log why training stops (bioloop always does)"),
    Row("early_stopping.strict", accept=(True,), meaning="a metric validation does not report is an error"),
    Row("early_stopping.check_finite", accept=(True,),
        note="a NaN validation metric counts as no improvement in bioloop, where Lightning stops at once",
        meaning="stop when the metric becomes NaN/inf"),
    Row("early_stopping.stopping_threshold", accept=(None,), meaning="stop once the metric reaches a value"),
    Row("early_stopping.divergence_threshold", accept=(None,), meaning="stop once the metric passes a value"),
    Row("early_stopping.check_on_train_epoch_end", accept=(None, False), meaning="check after validation"),
    Row("early_stopping.log_rank_zero_only", meaning="logging of the stop, " + _NO_EFFECT),
    Row("early_stopping.metric", "early_stopping.metric", meaning="bioloop's own spelling"),
    Row("early_stopping.min_epochs", "early_stopping.min_epochs", meaning="bioloop's own spelling"),
    # lightning.pytorch.callbacks.ModelCheckpoint
    Row("checkpointing.monitor", None, convert=_monitor,
        meaning="metrics that each keep their best checkpoint; the first picks the best model"),
    Row("checkpointing.mode", meaning="min or max for the monitored metrics, read with monitor"),
    Row("checkpointing.dirpath", None, convert=_dirpath, meaning="the checkpoint folder"),
    Row("checkpointing.every_n_epochs", "save_every_n_epochs", meaning="write a checkpoint every N epochs"),
    Row("checkpointing.save_top_k", None, convert=_top_k, default=1, meaning="how many best checkpoints to keep"),
    Row("checkpointing.save_last", None, convert=_save_last, meaning="also keep the newest checkpoint"),
    Row("checkpointing.save_weights_only", None, convert=_weights_only,
        meaning="checkpoints without optimizer state"),
    Row("checkpointing.filename", note="bioloop names checkpoints by model_save_path ({model_name}_{epoch}.pth)",
        meaning="the checkpoint file name template"),
    Row("checkpointing.every_n_train_steps", accept=(None, 0), meaning="checkpoints inside an epoch"),
    Row("checkpointing.train_time_interval", accept=(None,), meaning="checkpoints by wall-clock time"),
    Row("checkpointing.save_on_train_epoch_end", accept=(None, False), meaning="checkpoint after validation"),
    Row("checkpointing.auto_insert_metric_name", meaning="file naming, " + _NO_EFFECT),
    Row("checkpointing.enable_version_counter", meaning="file naming, " + _NO_EFFECT),
    Row("checkpointing.verbose", meaning="logging, " + _NO_EFFECT),
)

GTR = Table(
    tool="DREEM/GTR",
    rows=ROWS,
    markers=("trainer", "dataloader", "logging", "checkpointing", "model:dict", "optimizer.name", "scheduler.name",
             "early_stopping.monitor"),
    shared={"optimizer": ("name",), "scheduler": ("name",),
            "early_stopping": ("monitor", "verbose", "strict", "check_finite", "stopping_threshold",
                               "divergence_threshold", "check_on_train_epoch_end", "log_rank_zero_only")},
)

TABLES = (GTR,)
__all__ = ["GTR", "TABLES", "metric", "ANY"]
