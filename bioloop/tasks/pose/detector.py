"""The animal detector of top-down pose: keypoint boxes, torchvision detectors, training with resume.

Boxes are ``(x1, y1, x2, y2)`` in the pose package's pixel convention (pixel centres at integers,
so an H x W frame spans [-0.5, W - 0.5] x [-0.5, H - 0.5]); torchvision counts from pixel edges
(pixel 0 covers [0, 1)), so boxes are shifted by 0.5 on the way in and out.

``train_detector`` writes ``detector-{epoch:03d}.pt`` snapshots (``{"kind": "detector", "model",
"optimizer", "scheduler", "epoch", "variant", "min_size", "max_size", "metrics", "best_recall"}``),
``detector-best.pt`` (best validation recall) and ``detector_metrics.csv``. Each epoch draws its
randomness from ``(seed, epoch)`` only, so a resumed run repeats what an uninterrupted one does.
"""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from bioloop.config.structure import did_you_mean
from bioloop.errors import CheckpointError, ConfigError, TrainingError
from bioloop.tasks.pose.config import DETECTORS

__all__ = ["animal_box", "boxes_from_keypoints", "build_detector", "train_detector", "load_detector",
           "detect", "box_recall", "snapshot_paths"]

_SNAPSHOT = re.compile(r"^detector-(\d{3,})\.pt$")
_CLASS_HEADS = ("roi_heads.box_predictor.", "head.classification_head.")  # depend on num_classes


# ---------------------------------------------------------------------------- boxes

def animal_box(keypoints, padding: float, image_hw, *, min_size: float = 4.0,
               min_keypoints: int = 2) -> np.ndarray | None:
    """The box (4,) around one animal's (K, 2) keypoints, or None with < ``min_keypoints`` labeled.

    The keypoints' extent grows by ``padding`` times its size on each side, then to at least
    ``min_size`` pixels around its centre, and is clipped to the ``image_hw`` (H, W) frame (None: not
    clipped); None if under 1 pixel is left.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    kp = kp[np.isfinite(kp).all(axis=1)]
    if len(kp) < max(1, min_keypoints):
        return None
    lo, hi = kp.min(axis=0), kp.max(axis=0)
    size = hi - lo
    lo, hi = lo - padding * size, hi + padding * size
    centre, half = (lo + hi) / 2, np.maximum(hi - lo, min_size) / 2
    lo, hi = centre - half, centre + half
    if image_hw is not None:
        upper = np.array([image_hw[1], image_hw[0]], dtype=np.float64) - 0.5
        lo, hi = np.clip(lo, -0.5, upper), np.clip(hi, -0.5, upper)
    if np.any(hi - lo < 1.0):
        return None
    return np.concatenate([lo, hi])


def boxes_from_keypoints(keypoints, padding: float, image_hw, *, min_size: float = 4.0,
                         min_keypoints: int = 2) -> list[np.ndarray]:
    """Per frame of (N, A, K, 2) keypoints, the (n_i, 4) boxes of its animals with enough keypoints.

    ``image_hw`` is one (H, W) for every frame, a list of N sizes, or None (no clipping).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    sizes = [image_hw] * len(kp) if image_hw is None or np.ndim(image_hw) == 1 else list(image_hw)
    out = []
    for frame, hw in zip(kp, sizes):
        boxes = [animal_box(a, padding, hw, min_size=min_size, min_keypoints=min_keypoints) for a in frame]
        boxes = [b for b in boxes if b is not None]
        out.append(np.stack(boxes) if boxes else np.zeros((0, 4)))
    return out


# ---------------------------------------------------------------------------- models

def build_detector(variant: str, pretrained: bool | str = False, num_classes: int = 2, *,
                   where: str = "detector", min_size: int | None = None,
                   max_size: int | None = None) -> torch.nn.Module:
    """A torchvision detector with ``num_classes`` (background included); nothing is downloaded.

    FasterRCNN variants resize frames so the short side is ``min_size`` (the long one at most
    ``max_size``); pass the frame's sides so small frames are not upscaled to 800 pixels.
    """
    from torchvision.models import detection

    if variant not in DETECTORS:
        raise ConfigError.at(f"{where}.variant", f"unknown detector{did_you_mean(variant, DETECTORS)}",
                             got=variant, fix=f"use one of {', '.join(DETECTORS)}")
    if pretrained is True:
        raise ConfigError.at(f"{where}.pretrained", f"pretrained=True would download {variant} weights, "
                             "and bioloop works offline", got=True,
                             fix="download the weights file once yourself and set pretrained to its path, "
                             "or set pretrained=False to train from scratch")
    if pretrained not in (False, None) and not isinstance(pretrained, (str, Path)):
        raise ConfigError.at(f"{where}.pretrained", "pretrained must be False or a local weights file",
                             got=pretrained, fix="e.g. pretrained='/models/fasterrcnn.pth'")
    kwargs = {}
    if variant.startswith("fasterrcnn"):
        kwargs = {k: int(v) for k, v in (("min_size", min_size), ("max_size", max_size)) if v is not None}
    model = getattr(detection, variant)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if pretrained not in (False, None):
        _load_pretrained(model, Path(pretrained), f"{where}.pretrained")
    return model


def _load_pretrained(model: torch.nn.Module, path: Path, where: str) -> None:
    """Strict load; only the class-count heads may differ (e.g. a COCO file): they stay fresh."""
    from bioloop.engine.checkpoint import apply_model_state, load_weights

    if not path.is_file():
        raise CheckpointError.at(where, "weights file not found", got=str(path),
                                 fix="give the path of a torchvision detector state dict")
    state = load_weights(path)
    own = model.state_dict()
    for key, value in own.items():
        if key.startswith(_CLASS_HEADS) and key in state and tuple(state[key].shape) != tuple(value.shape):
            state[key] = value
    apply_model_state(model, state, path=path)


def load_detector(path_or_dir, settings=None, *, device="cpu", where: str = "detector") -> torch.nn.Module:
    """The detector in a snapshot file, or the newest snapshot in a folder (eval mode)."""
    from bioloop.engine.checkpoint import apply_model_state, load_checkpoint

    path = Path(path_or_dir)
    if path.is_dir():
        found = snapshot_paths(path)
        if not found:
            raise CheckpointError.at(str(path), "no detector snapshot (detector-NNN.pt) in this folder",
                                     fix="train the detector first, or give a snapshot file")
        path = found[-1]
    if not path.is_file():
        raise CheckpointError.at(str(path), "detector snapshot not found", fix="check the path")
    state = _checked_snapshot(load_checkpoint(path), path, settings)
    model = build_detector(state["variant"], False, where=where, min_size=state.get("min_size"),
                           max_size=state.get("max_size"))
    apply_model_state(model, state["model"], path=path)
    return model.to(device).eval()


def _checked_snapshot(state: dict, path: Path, settings) -> dict:
    if state.get("kind") != "detector" or "variant" not in state:
        raise CheckpointError.at(str(path), "not a bioloop detector snapshot", fix="give a detector-NNN.pt file "
                                 "written by train_detector")
    if settings is not None and state["variant"] != settings.variant:
        raise CheckpointError.at(str(path), f"this snapshot is a {state['variant']}, the settings ask for "
                                 f"{settings.variant}", fix="set detector.variant to the snapshot's, or start fresh")
    return state


def _to_tensor(frame: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).float().div_(255.0)


@torch.inference_mode()
def detect(model: torch.nn.Module, frames, score_threshold: float = 0.5, max_animals: int | None = None,
           batch_size: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per HxWx3 uint8 frame, (boxes (n, 4) in frame pixels, scores (n,)), best first."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for first in range(0, len(frames), batch_size):
        images = [_to_tensor(f, device) for f in frames[first:first + batch_size]]
        for det in model(images):
            keep = det["scores"] >= score_threshold
            if "labels" in det:
                keep &= det["labels"] == 1
            scores, boxes = det["scores"][keep], det["boxes"][keep]
            order = torch.argsort(scores, descending=True)[:max_animals]
            out.append((boxes[order].double().cpu().numpy() - 0.5, scores[order].float().cpu().numpy()))
    return out


def box_recall(found: list[np.ndarray], truth: list[np.ndarray], iou: float = 0.5) -> float:
    """Share of true boxes matched by a detection with IoU >= ``iou`` (NaN without true boxes)."""
    from torchvision.ops import box_iou

    hits = total = 0
    for f, t in zip(found, truth):
        total += len(t)
        if len(t) and len(f):
            hits += int((box_iou(torch.as_tensor(t), torch.as_tensor(f)).max(dim=1).values >= iou).sum())
    return hits / total if total else float("nan")


# ---------------------------------------------------------------------------- training

def snapshot_paths(out_dir) -> list[Path]:
    """The ``detector-NNN.pt`` files in ``out_dir``, oldest epoch first."""
    folder = Path(out_dir)
    found = [(int(m.group(1)), p) for p in folder.glob("detector-*.pt") if (m := _SNAPSHOT.match(p.name))]
    return [p for _, p in sorted(found)]


def _start_snapshot(settings, out_dir: Path, where: str) -> Path | None:
    existing = snapshot_paths(out_dir)
    if settings.resume_training_from:
        path = Path(settings.resume_training_from)
        if not path.is_file():
            raise CheckpointError.at(f"{where}.resume_training_from", "detector snapshot not found",
                                     got=str(path), fix="give an existing detector-NNN.pt file")
        return path
    choice = settings.load_model
    if choice is None:
        if existing:
            raise CheckpointError.at(f"{where}.load_model", f"None starts the detector afresh, but {out_dir} "
                                     f"holds {len(existing)} detector snapshot(s) it would overwrite", got=None,
                                     fix="resume with load_model = 'latest', or delete the old snapshots")
        return None
    if choice == "latest":
        return existing[-1] if existing else None
    if choice == "best":
        best = out_dir / "detector-best.pt"
        return best if best.is_file() else (existing[-1] if existing else None)
    path = Path(choice)
    if not path.is_file():
        raise CheckpointError.at(f"{where}.load_model", "detector snapshot not found", got=str(path),
                                 fix="give an existing file, 'latest', 'best' or None")
    return path


def _split_where(where: str) -> tuple[str, str]:
    file, _, key = where.partition(": ")
    return (file, key) if key else ("config", where)


def _optimizer_and_scheduler(model, settings, state, start_epoch: int, where: str):
    from bioloop.engine.optim import build_optimizer, build_scheduler

    file, key = _split_where(where)
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    else:
        optimizer = build_optimizer(settings.optimizer, params, learning_rate=settings.learning_rate,
                                    where=file, key=f"{key}.optimizer")
    scheduler = build_scheduler(settings.scheduler, optimizer, where=file, key=f"{key}.scheduler")
    if state is None:
        return optimizer, scheduler
    if scheduler is not None and settings.load_scheduler_state_dict and state.get("scheduler"):
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return optimizer, scheduler
    with warnings.catch_warnings():  # an edited schedule: fast-forward it to the resumed epoch
        warnings.simplefilter("ignore")
        for _ in range(start_epoch if scheduler is not None else 0):
            scheduler.step()
    lrs = [g["lr"] for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError.at(f"{where}.optimizer", f"the snapshot's optimizer state does not fit ({exc})",
                                 fix="use the optimizer the snapshot was trained with") from None
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    return optimizer, scheduler


def _read(reader, labels, row: int) -> np.ndarray:
    video = labels.video_paths[row] if labels.video_paths else ""
    fidx = None if labels.frame_indices is None else int(labels.frame_indices[row])
    frame = reader.read(labels.image_paths[row], video, fidx)
    return np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame[..., :3]


def _truth(labels, row: int, frame: np.ndarray, settings) -> np.ndarray:
    return boxes_from_keypoints(labels.keypoints[row][None], settings.box_padding, frame.shape[:2])[0]


def _batch(reader, labels, rows, settings, rng, device):
    images, targets = [], []
    for row in rows:
        frame = _read(reader, labels, int(row))
        boxes = _truth(labels, int(row), frame, settings)
        if settings.hflip and rng.random() < 0.5:
            w = frame.shape[1]
            frame = frame[:, ::-1]
            boxes = np.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
        images.append(_to_tensor(frame, device))
        targets.append({"boxes": torch.as_tensor(boxes + 0.5, dtype=torch.float32, device=device).reshape(-1, 4),
                        "labels": torch.ones(len(boxes), dtype=torch.int64, device=device)})
    return images, targets


def _validate(model, reader, labels, rows, settings) -> float:
    frames = [_read(reader, labels, int(r)) for r in rows]
    truth = [_truth(labels, int(r), f, settings) for r, f in zip(rows, frames)]
    found = [b for b, _ in detect(model, frames, settings.score_threshold, settings.max_animals,
                                  settings.batch_size)]
    model.train()
    return box_recall(found, truth)


def _write_metrics(path: Path, rows: list[dict]) -> None:
    fields = ["epoch", "loss", "lr", "val_recall"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in fields} for r in rows)


def _read_metrics(path: Path, up_to: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [r for r in csv.DictReader(handle) if r.get("epoch", "").isdigit() and int(r["epoch"]) <= up_to]


def train_detector(settings, labels, train_rows, out_dir, *, val_rows=None, seed: int = 0, device="cpu",
                   show_progress: bool = True, where: str = "detector") -> Path:
    """Train (or resume) the detector on keypoint boxes of ``train_rows``; returns the final snapshot.

    Resumes from ``settings.resume_training_from``, else ``settings.load_model`` ('latest' = the newest
    snapshot in ``out_dir``); a detector that finished ``settings.epochs`` is not retrained.
    """
    from tqdm.auto import tqdm

    from bioloop.engine.checkpoint import apply_model_state, load_checkpoint, save_atomic
    from bioloop.engine.optim import step_scheduler
    from bioloop.engine.progress import progress_enabled
    from bioloop.tasks.pose.data import FrameReader

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = _start_snapshot(settings, out_dir, where)
    state = _checked_snapshot(load_checkpoint(start), start, settings) if start is not None else None
    start_epoch = int(state["epoch"]) if state else 0
    if start_epoch >= settings.epochs:
        return start
    rows = np.asarray(train_rows, dtype=np.int64).reshape(-1)
    val = np.asarray([] if val_rows is None else val_rows, dtype=np.int64).reshape(-1)
    if len(rows) == 0:
        raise TrainingError.at(where, "no training frames for the detector", fix="check the train split")
    reader = FrameReader()
    hw = (state.get("min_size"), state.get("max_size")) if state else None
    if state is None:
        h, w = _read(reader, labels, int(rows[0])).shape[:2]
        hw = min(h, w), max(h, w)
    torch.manual_seed(seed)
    model = build_detector(settings.variant, False if state else settings.pretrained, where=where,
                           min_size=hw[0], max_size=hw[1])
    if state:
        apply_model_state(model, state["model"], path=start)
    model.to(device).train()
    optimizer, scheduler = _optimizer_and_scheduler(model, settings, state, start_epoch, where)
    best = float(state.get("best_recall", float("nan"))) if state else float("nan")
    metrics_path = out_dir / "detector_metrics.csv"
    history = _read_metrics(metrics_path, start_epoch)
    enabled = progress_enabled(quiet=not show_progress)
    n_batches = -(-len(rows) // settings.batch_size)
    path = start
    for epoch in range(start_epoch, settings.epochs):
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(int(rng.integers(2**62)))
        order = rng.permutation(rows)
        total = 0.0
        with tqdm(total=n_batches, desc=f"detector epoch {epoch + 1}/{settings.epochs}", disable=not enabled,
                  dynamic_ncols=True) as bar:
            for first in range(0, len(order), settings.batch_size):
                images, targets = _batch(reader, labels, order[first:first + settings.batch_size], settings,
                                         rng, device)
                loss = sum(model(images, targets).values())
                if not torch.isfinite(loss):
                    raise TrainingError.at(where, f"the detector loss is not finite at epoch {epoch + 1}",
                                           got=float(loss.detach()), fix="lower detector.learning_rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                total += value
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
        row = {"epoch": epoch + 1, "loss": total / n_batches, "lr": optimizer.param_groups[0]["lr"]}
        step_scheduler(scheduler)
        last = epoch + 1 == settings.epochs
        recall = float("nan")
        if len(val) and ((epoch + 1) % settings.validate_every == 0 or last):
            recall = row["val_recall"] = _validate(model, reader, labels, val, settings)
        history.append(row)
        _write_metrics(metrics_path, history)
        snapshot = {"kind": "detector", "variant": settings.variant, "epoch": epoch + 1, "min_size": hw[0],
                    "max_size": hw[1], "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "metrics": row, "best_recall": best}
        if np.isfinite(recall) and not recall <= best:  # the first recall, or a better one
            best = snapshot["best_recall"] = recall
            save_atomic(snapshot, out_dir / "detector-best.pt")
        if (epoch + 1) % settings.save_every_n_epochs == 0 or last:
            path = save_atomic(snapshot, out_dir / f"detector-{epoch + 1:03d}.pt")
            _prune(out_dir, settings.max_snapshots)
    reader.close()
    return path


def _prune(out_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    for old in snapshot_paths(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
