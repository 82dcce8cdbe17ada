"""The top-down detector as an engine task: it trains through ``bioloop.engine.trainer.Trainer``.

``train_detector`` builds a :class:`DetectorTask` (the labels, the frames of each split and the
``detector`` settings) and a training config of the engine from the ``detector`` section, then runs
the shared loop: autocast precision and a gradient scaler, DDP when the runtime is distributed, the
interrupt checkpoint on SIGINT/SIGTERM, TensorBoard and ``metrics.csv``, the checkpoint manifest.

Files in ``out_dir`` (the pose run's ``<checkpoint folder>/detector/``): ``detector-NNN.pt`` epoch
snapshots, ``detector_best.pth`` (best validation box recall), ``detector_interrupted.pth`` after an
interrupt, ``manifest.json``. The run records (``metrics.csv``, TensorBoard events, ``run.json``) go to
``run_dir``: the pose run's ``<run folder>/detector/`` (so one ``tensorboard --logdir`` shows both).
Each snapshot's ``extras`` hold ``{"kind": "detector", "variant", "min_size", "max_size"}``, what
``load_detector`` needs to rebuild the model.

Batches are ``(images, targets)`` lists (torchvision detectors take frames of any size): the
training step sums the model's loss dict into ``"loss"`` and logs each term (``train/loss_box_reg``,
...); validation counts the true boxes found by a detection with IoU >= 0.5 (``recall``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioloop.errors import CheckpointError, TrainingError
from bioloop.tasks.base import Task

__all__ = ["DetectorFrames", "DetectorTask", "detector_training_config", "train_detector"]

MODEL_NAME = "detector"
TEMPLATE = "detector-{epoch:03d}.pt"
BEST_FILE = f"{MODEL_NAME}_best.pth"


class DetectorFrames(torch.utils.data.Dataset):
    """One item per labeled frame: ``(image (3, H, W) in [0, 1], {"boxes", "labels"})``.

    Boxes are in torchvision's pixel-edge convention (the pose package's boxes + 0.5). Training
    items receive ``(index, seed)`` keys and flip horizontally with probability 0.5 (``hflip``),
    drawn from that seed; validation items take plain indices and are never flipped.
    """

    def __init__(self, labels, rows, settings, *, train: bool):
        self.labels, self.settings, self.train = labels, settings, train
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self._reader = None  # opened in whichever process reads (DataLoader workers included)

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self, index: int) -> np.ndarray:
        from bioloop.tasks.pose.data import FrameReader
        from bioloop.tasks.pose.detector import _read

        if self._reader is None:
            self._reader = FrameReader()
        return _read(self._reader, self.labels, int(self.rows[index]))

    def __getitem__(self, key):
        from bioloop.tasks.pose.detector import boxes_from_keypoints

        index, seed = key if self.train else (key, None)
        frame = self.frame(int(index))
        row = int(self.rows[int(index)])
        boxes = boxes_from_keypoints(self.labels.keypoints[row][None], self.settings.box_padding, frame.shape[:2])[0]
        if self.train and self.settings.hflip and np.random.default_rng(seed).random() < 0.5:
            w = frame.shape[1]
            frame = frame[:, ::-1]
            boxes = np.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
        image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255.0)
        return image, {"boxes": torch.as_tensor(boxes + 0.5, dtype=torch.float32).reshape(-1, 4),
                       "labels": torch.ones(len(boxes), dtype=torch.int64)}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class DetectorTask(Task):
    """The detector of one top-down pose run (not registered: the pose task's after_training runs it)."""

    name = "pose-detector"
    default_key_metric = "recall"

    def __init__(self, settings, labels, train_rows, val_rows, *, frame_hw: tuple[int, int],
                 pretrained: bool | str, where: str):
        self.settings, self.labels, self.where = settings, labels, where
        self.train_rows, self.val_rows = train_rows, val_rows
        self.frame_hw, self.pretrained = frame_hw, pretrained
        self.datasets: list[DetectorFrames] = []

    def build_model(self, cfg) -> torch.nn.Module:
        from bioloop.tasks.pose.detector import build_detector

        return build_detector(self.settings.variant, self.pretrained, where=self.where,
                              min_size=min(self.frame_hw), max_size=max(self.frame_hw))

    def build_datasets(self, cfg):
        train = DetectorFrames(self.labels, self.train_rows, self.settings, train=True)
        val = DetectorFrames(self.labels, self.val_rows, self.settings, train=False) if len(self.val_rows) else None
        self.datasets = [d for d in (train, val) if d is not None]
        return train, val

    @staticmethod
    def collate(items):
        """Lists, not stacked tensors: frames may differ in size and in their number of boxes."""
        return [image for image, _ in items], [target for _, target in items]

    def training_step(self, model, batch, loss_fn, cfg) -> dict[str, torch.Tensor]:
        images, targets = batch
        losses = model(images, targets)  # train mode: the loss dict
        out = {"loss": sum(losses.values())}
        out.update({name: value.detach() for name, value in losses.items()})
        return out

    def validation_step(self, model, batch, loss_fn, cfg) -> dict[str, int]:
        from torchvision.ops import box_iou

        images, targets = batch
        settings = self.settings
        hits = total = 0
        for det, truth in zip(model(images), targets):  # eval mode: detections
            keep = det["scores"] >= settings.score_threshold
            if "labels" in det:
                keep &= det["labels"] == 1
            order = torch.argsort(det["scores"][keep], descending=True)[:settings.max_animals]
            found = det["boxes"][keep][order].float()
            total += len(truth["boxes"])
            if len(truth["boxes"]) and len(found):
                hits += int((box_iou(truth["boxes"].float(), found).max(dim=1).values >= 0.5).sum())
        return {"hits": hits, "total": total}

    def reduce_validation(self, parts, cfg) -> dict[str, float]:
        total = sum(p["total"] for p in parts)
        return {"recall": sum(p["hits"] for p in parts) / total} if total else {}

    def checkpoint_extras(self, cfg) -> dict[str, Any]:
        return {"kind": "detector", "variant": self.settings.variant, "min_size": int(min(self.frame_hw)),
                "max_size": int(max(self.frame_hw))}

    def close(self) -> None:
        for dataset in self.datasets:
            dataset.close()


def detector_training_config(settings, out_dir: Path, *, load_model: str | None, seed: int, device: str | None,
                             precision: str, tensorboard: bool, source=None, num_workers: int = 0,
                             run_dir: Path | None = None):
    """The engine's settings of a detector run: checkpoints in ``out_dir``, run records (TensorBoard,
    ``metrics.csv``, ``run.json``) in ``run_dir`` (default ``out_dir``)."""
    import attrs

    from bioloop.config.schema import Logger, TrainingConfig

    if source is not None:  # an interrupt's resume command resumes the detector, not a fresh one
        source = attrs.evolve(source, overrides=(*source.overrides, "detector.load_model=latest"))
    return TrainingConfig(
        task="pose", model_name=MODEL_NAME, model_save_path=str(out_dir / TEMPLATE), logs_save_path=str(run_dir if run_dir is not None else out_dir),
        epochs=settings.epochs, iterations_per_epoch=None, batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        optimizer=settings.optimizer if settings.optimizer is not None else "AdamW", scheduler=settings.scheduler,
        load_scheduler_state_dict=settings.load_scheduler_state_dict, validate_every=settings.validate_every,
        save_every_n_epochs=settings.save_every_n_epochs, max_snapshots=settings.max_snapshots,
        load_model=load_model, key_metric="recall", key_metric_mode="max", random_seed=seed, device=device,
        precision=precision, num_workers=num_workers, logger=Logger(tensorboard=tensorboard, figures=False),
        source=source,
    )


def _split_where(where: str) -> tuple[str, str]:
    file, _, key = where.partition(": ")
    return (file, key) if key else ("config", where)


def _check_optimizer(settings, where: str) -> None:
    """Build the optimizer and scheduler once on a dummy parameter, so errors name ``detector.*``."""
    from bioloop.engine.optim import build_optimizer, build_scheduler

    file, key = _split_where(where)
    spec = settings.optimizer if settings.optimizer is not None else "AdamW"
    optimizer = build_optimizer(spec, [torch.nn.Parameter(torch.zeros(1))], learning_rate=settings.learning_rate,
                                where=file, key=f"{key}.optimizer")
    build_scheduler(settings.scheduler, optimizer, where=file, key=f"{key}.scheduler")


def _start_snapshot(settings, out_dir: Path, where: str) -> Path | None:
    """The snapshot the run continues from (None: fresh), with the detector's own messages."""
    from bioloop.engine.checkpoint import CheckpointManager
    from bioloop.tasks.pose.detector import snapshot_paths

    manager = CheckpointManager(out_dir, model_name=MODEL_NAME, filename_template=TEMPLATE)
    if settings.resume_training_from:
        path = Path(settings.resume_training_from)
        if not path.is_file():
            raise CheckpointError.at(f"{where}.resume_training_from", "detector snapshot not found",
                                     got=str(path), fix="give an existing detector-NNN.pt file")
        return path.resolve()
    choice = settings.load_model
    if choice is None:
        existing = snapshot_paths(out_dir) + [p for p in (out_dir / manager.interrupt_file,) if p.is_file()]
        if existing:
            raise CheckpointError.at(f"{where}.load_model", f"None starts the detector afresh, but {out_dir} "
                                     f"holds {len(existing)} detector snapshot(s) it would overwrite", got=None,
                                     fix="resume with load_model = 'latest', or delete the old snapshots")
        return None
    if choice == "latest":
        return manager.latest()
    if choice == "best":
        return manager.best() or manager.latest()
    path = Path(choice)
    if not path.is_file():
        raise CheckpointError.at(f"{where}.load_model", "detector snapshot not found", got=str(path),
                                 fix="give an existing file, 'latest', 'best' or None")
    return path.resolve()


def train_detector(settings, labels, train_rows, out_dir, *, val_rows=None, seed: int = 0, device=None,
                   precision: str = "32", show_progress: bool = True, where: str = "detector", source=None,
                   tensorboard: bool = True, num_workers: int = 0, run_dir=None, runtime=None) -> Path:
    """Train (or resume, or skip when finished) the detector through the engine; returns the final snapshot.

    Resumes from ``settings.resume_training_from``, else ``settings.load_model`` ('latest': the newest
    epoch or interrupt checkpoint in ``out_dir``'s manifest); a detector that finished
    ``settings.epochs`` is not retrained. Training runs on ``runtime`` (every rank of a distributed run
    calls this: the engine wraps the step in DDP), else on this process alone (``device``, ``precision``);
    run records go to ``run_dir`` (default ``out_dir``). The engine's messages start with "detector: ".
    """
    from bioloop.engine.checkpoint import CheckpointManager, load_checkpoint
    from bioloop.engine.runtime import Runtime, check_precision, resolve_device
    from bioloop.engine.trainer import Trainer
    from bioloop.tasks.pose.detector import _checked_snapshot

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = np.asarray(train_rows, dtype=np.int64).reshape(-1)
    val = np.asarray([] if val_rows is None else val_rows, dtype=np.int64).reshape(-1)
    start = _start_snapshot(settings, out_dir, where)
    info = _checked_snapshot(load_checkpoint(start), start, settings) if start is not None else None
    if len(rows) == 0 and (info is None or int(info["epoch"]) < settings.epochs):
        raise TrainingError.at(where, "no training frames for the detector", fix="check the train split")
    _check_optimizer(settings, where)
    if info is not None:
        frame_hw = (int(info["min_size"]), int(info["max_size"]))
    else:
        frame_hw = DetectorFrames(labels, rows[:1], settings, train=False).frame(0).shape[:2]
    task = DetectorTask(settings, labels, rows, val, frame_hw=frame_hw,
                        pretrained=False if info is not None else settings.pretrained, where=where)
    if runtime is None:
        device = torch.device(device) if isinstance(device, torch.device) else resolve_device(device, where=where)
        check_precision(precision, device, where=f"{_split_where(where)[0]}: precision")
        runtime = Runtime(device=device, precision=precision)
    device = runtime.device
    cfg = detector_training_config(settings, out_dir, load_model=str(start) if start else None, seed=seed,
                                   device=str(device), precision=precision, tensorboard=tensorboard, source=source,
                                   num_workers=num_workers, run_dir=Path(run_dir).resolve() if run_dir else None)
    try:
        Trainer(cfg, task, runtime, quiet=not show_progress,
                echo=lambda message: print(f"detector: {message}", file=sys.stderr, flush=True)).run()
    finally:
        task.close()
    return CheckpointManager(out_dir, model_name=MODEL_NAME, filename_template=TEMPLATE).latest()
