"""``bioloop evaluate`` for tracking: motmetrics (detection-aware) and, for CTC folders, DET/TRA.

Prediction and truth are read like prediction inputs (.slp, CTC folders, MOT txt, TrackMate CSV)
and paired sequence by sequence. Instances match by box IoU (``match="iou"``, threshold 0.5 by
default) or by centroid distance in pixels (``match="centroid"`` needs ``match_threshold``), never
by id, so missed and invented detections count. The metrics are ``runner.metrics.test``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.types import Instances, TrackSequence

__all__ = ["evaluate_tracking", "format_table"]


def _concat(pairs: list[tuple[TrackSequence, TrackSequence]]) -> tuple[list[Instances], list[Instances]]:
    """All sequences as one frame list each: own frame range and id namespace per sequence."""
    gt_all, pred_all, offset = [], [], 0
    for k, (g, p) in enumerate(pairs):
        shift = k * 1_000_000
        n = max(len(g), len(p))
        for frames, out in ((g.frames, gt_all), (p.frames, pred_all)):
            for f in frames:
                ids = np.where(f.track_ids >= 0, f.track_ids + shift, -1)
                out.append(Instances(f.frame + offset, f.points, f.boxes, ids, scores=f.scores))
        offset += n
    return gt_all, pred_all


def format_table(metrics: dict[str, Any]) -> str:
    width = max(len(k) for k in metrics) if metrics else 6
    lines = [f"{'metric':<{width}}  value"]
    for name, value in metrics.items():
        text = f"{value:.4f}" if isinstance(value, float) and not float(value).is_integer() else \
            (str(int(value)) if isinstance(value, (int, float)) and not math.isnan(value) else str(value))
        lines.append(f"{name:<{width}}  {text}")
    return "\n".join(lines)


def evaluate_tracking(cfg, *, prediction, truth=None, report=None, match: str | None = None,
                      match_threshold: float | None = None, video=None, **_options) -> dict[str, Any]:
    """``{"metrics": {...}, "table": str}``; ``report``: also write them as JSON."""
    from bioloop.tasks.tracking.metrics import ctc_scores, mot_metrics
    from bioloop.tasks.tracking.predict import read_input

    if not truth:
        raise ConfigError.at("evaluate", "needs the ground truth", fix="pass --truth (a .slp, CTC folder, MOT txt "
                             "or TrackMate CSV)")
    pred, pfmt = read_input(str(prediction))
    gt, gfmt = read_input(str(truth), video)
    if len(pred) != len(gt):
        raise DataError.at(str(prediction), f"has {len(pred)} sequences but the truth has {len(gt)}",
                           fix="score a prediction of the same videos")
    names = list(cfg.runner.metrics.test or ["num_switches", "mota", "idf1"])
    where = f"{cfg.source.name if cfg.source else 'config'}: runner.metrics.test"
    g_all, p_all = _concat(list(zip(gt, pred)))
    scores = mot_metrics(g_all, p_all, names, match=match or "iou", threshold=match_threshold, where=where)
    metrics: dict[str, Any] = {k: float(v) for k, v in scores.items() if np.isscalar(v)}
    if pfmt == "ctc" and gfmt == "ctc":
        ctc = ctc_scores(gt[0].source, pred[0].source)
        metrics.update({k: float(ctc[k]) for k in ("DET", "TRA")})
    result = {"metrics": metrics, "table": format_table(metrics), "prediction": str(prediction),
              "truth": str(truth), "match": match or "iou"}
    if report:
        path = Path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        plain = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        path.write_text(json.dumps({**{k: v for k, v in result.items() if k != "table"}, "metrics": plain}, indent=2))
    return result
