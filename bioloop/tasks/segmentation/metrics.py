"""Per-class semantic segmentation scores from pooled confusion counts.

Counts (TP, FP, FN per class) are summed over batches, ranks and volumes first, then turned
into scores once, so the scores are those of the whole validation set, not a mean of
per-batch scores. Elements whose target is NaN (not annotated) are never counted.

Conventions:
    IoU = TP / (TP + FP + FN), Dice = 2 TP / (2 TP + FP + FN);
    precision = TP / (TP + FP), recall = TP / (TP + FN).
    A score whose denominator is 0 is NaN (undefined): IoU and Dice of a class absent from
    both truth and prediction, precision with no predicted positive, recall with no true
    positive. ``iou_mean`` and ``dice_mean`` average the defined per-class values only (NaN
    when none is defined).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["confusion_counts", "format_table", "scores_from_counts"]


def confusion_counts(logits, target, *, threshold: float = 0.5,
                     from_logits: bool = True) -> torch.Tensor:
    """(C, 3) int64 counts of TP, FP, FN per class for (B, C, *spatial) inputs.

    A prediction is positive where sigmoid(logit) > threshold (or prob > threshold when
    ``from_logits`` is False); truth is positive where target > 0.5; NaN targets are skipped.
    The result stays on the input's device so it can be all-reduced.
    """
    logits, target = torch.as_tensor(logits), torch.as_tensor(target)
    if logits.shape != target.shape or logits.ndim < 2:
        raise ValueError(f"predictions and targets must both be shaped (B, C, *spatial) "
                         f"(got {tuple(logits.shape)} and {tuple(target.shape)})")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1] (got {threshold!r})")
    with torch.no_grad():
        channels = logits.shape[1]
        score = logits.detach().float()
        pred = (torch.sigmoid(score) if from_logits else score) > threshold
        target = target.detach()
        if not target.is_floating_point():
            target = target.float()
        valid = ~torch.isnan(target)
        truth = target > 0.5  # False where NaN
        pred = pred.transpose(0, 1).reshape(channels, -1)
        truth = truth.transpose(0, 1).reshape(channels, -1)
        valid = valid.transpose(0, 1).reshape(channels, -1)
        tp = (pred & truth).sum(1)
        fp = (pred & ~truth & valid).sum(1)
        fn = (~pred & truth).sum(1)
        return torch.stack([tp, fp, fn], dim=1).to(torch.int64)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _mean_defined(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def scores_from_counts(counts, class_names: Sequence[str]) -> dict[str, float]:
    """Scores ``iou/<cls>``, ``dice/<cls>``, ``precision/<cls>``, ``recall/<cls>``,
    ``iou_mean`` and ``dice_mean`` from (C, 3) TP/FP/FN counts (see the module docstring)."""
    table = torch.as_tensor(counts).detach().cpu().to(torch.int64)
    names = list(class_names)
    if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] != len(names):
        raise ValueError(f"counts must be shaped ({len(names)}, 3) for classes {names} "
                         f"(got {tuple(table.shape)})")
    scores: dict[str, float] = {}
    ious, dices = [], []
    for name, (tp, fp, fn) in zip(names, table.tolist()):
        iou = _ratio(tp, tp + fp + fn)
        dice = _ratio(2 * tp, 2 * tp + fp + fn)
        scores[f"iou/{name}"] = iou
        scores[f"dice/{name}"] = dice
        scores[f"precision/{name}"] = _ratio(tp, tp + fp)
        scores[f"recall/{name}"] = _ratio(tp, tp + fn)
        ious.append(iou)
        dices.append(dice)
    scores["iou_mean"] = _mean_defined(ious)
    scores["dice_mean"] = _mean_defined(dices)
    return scores


def _cell(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.4f}"


def format_table(scores: Mapping[str, float], class_names: Sequence[str]) -> str:
    """A plain-text table: one row per class (IoU, Dice, precision, recall) and a mean row.

    Undefined (NaN) scores show as "-".
    """
    header = ["class", "IoU", "Dice", "precision", "recall"]
    rows = [[str(name)] + [_cell(scores.get(f"{key}/{name}"))
                           for key in ("iou", "dice", "precision", "recall")]
            for name in class_names]
    rows.append(["mean", _cell(scores.get("iou_mean")), _cell(scores.get("dice_mean")), "", ""])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *[line(r) for r in rows[:-1]], rule, line(rows[-1])])
