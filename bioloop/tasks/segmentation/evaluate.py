"""Score predicted probabilities against a ground-truth crop, per class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bioloop.data.ngff import open_volume
from bioloop.errors import DataError


def evaluate_semantic(cfg, *, prediction: str, truth: str, threshold: float | None = None,
                      report: str | None = None) -> dict:
    """IoU, Dice, precision and recall per class over the truth crop; optionally a JSON report."""
    from bioloop.tasks.segmentation.metrics import format_table, scores_from_counts

    threshold = cfg.threshold if threshold is None else threshold
    options = cfg.storage_options or None
    counts = torch.zeros((len(cfg.classes), 3), dtype=torch.int64)
    scored = []
    for c, name in enumerate(cfg.classes):
        truth_path = f"{str(truth).rstrip('/')}/{name}"
        try:
            gt = open_volume(truth_path, None, storage_options=options)
        except DataError:
            continue  # this crop does not annotate the class
        pred_path = f"{str(prediction).rstrip('/')}/{name}"
        pred = open_volume(pred_path, gt.scale, storage_options=options)
        position = np.asarray(pred.world_to_voxel(gt.translation))
        start = np.round(position).astype(int)
        if np.any(np.abs(position - start) > 1e-3):
            raise DataError.at(pred_path, "prediction is not on the truth's voxel grid", got=tuple(pred.translation))
        stop = start + np.asarray(gt.spatial_shape)
        if np.any(start < 0) or np.any(stop > np.asarray(pred.spatial_shape)):
            raise DataError.at(pred_path, "prediction does not cover the truth crop",
                               got={"prediction_nm": pred.roi, "truth_nm": gt.roi},
                               fix="predict with a --roi that contains the crop")
        p = pred.read(tuple(start), gt.spatial_shape) > threshold
        t = gt.read((0,) * len(gt.spatial_shape), gt.spatial_shape) > 0
        counts[c, 0] = int(np.count_nonzero(p & t))
        counts[c, 1] = int(np.count_nonzero(p & ~t))
        counts[c, 2] = int(np.count_nonzero(~p & t))
        scored.append(name)
    if not scored:
        raise DataError.at(str(truth), f"no ground truth for any of the classes {list(cfg.classes)}",
                           fix="point --truth at a crop group holding one array group per class")
    names = list(cfg.classes)
    rows = [i for i, n in enumerate(names) if n in scored]
    scores = scores_from_counts(counts[rows], [names[i] for i in rows])
    result = {"classes": scored, "threshold": threshold, "scores": scores,
              "table": format_table(scores, scored), "prediction": str(prediction), "truth": str(truth)}
    if report:
        path = Path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        plain = {k: v for k, v in result.items() if k != "table"}
        plain["scores"] = {k: (float(v) if np.isfinite(v) else None) for k, v in scores.items()}
        path.write_text(json.dumps(plain, indent=2))
    return result
