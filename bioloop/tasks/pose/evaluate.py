"""Score a DLC-style prediction CSV against a labels file with the metrics validation uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bioloop.errors import DataError


def _key(path: str, index) -> str:
    """Frames match by their folder and file name (labeled-data/<video>/imgNNNN.png), else by index."""
    return f"{Path(path).parent.name}/{Path(path).name}" if path else str(index)


def evaluate_pose(cfg, *, prediction, truth, report=None) -> dict:
    """Mean pixel error, RMSE, PCK (and OKS mAP with eval.oks_sigmas) per keypoint, in frame pixels."""
    from bioloop.tasks.pose.labels import read_labels
    from bioloop.tasks.pose.metrics import bbox_area, summarize

    pred, true = read_labels(prediction), read_labels(truth)
    missing = [n for n in true.keypoint_names if n not in pred.keypoint_names]
    if missing:
        raise DataError.at(str(prediction), f"prediction lacks keypoints {missing}",
                           fix="predict with a model trained on these keypoints")
    order = [pred.keypoint_names.index(n) for n in true.keypoint_names]
    frames = {}
    for i, path in enumerate(pred.image_paths):
        index = None if pred.frame_indices is None else int(pred.frame_indices[i])
        frames[_key(path, index)] = i
    rows_t, rows_p = [], []
    for i, path in enumerate(true.image_paths):
        index = None if true.frame_indices is None else int(true.frame_indices[i])
        j = frames.get(_key(path, index))
        if j is not None:
            rows_t.append(i)
            rows_p.append(j)
    if not rows_t:
        raise DataError.at(str(prediction), "no predicted frame matches a labeled frame of " + str(truth),
                           fix="predict the labeled images (or the video the labels come from)")
    p = pred.keypoints[rows_p][:, 0][:, order]
    t = true.keypoints[rows_t][:, 0]
    sigmas = cfg.eval.oks_sigmas
    kwargs = {}
    if sigmas is not None:
        kwargs = {"sigmas": np.broadcast_to(np.asarray(sigmas, float), (t.shape[1],)), "area": bbox_area(t)}
    scores = summarize(p, t, list(true.keypoint_names), thresholds=tuple(cfg.eval.pck_thresholds), **kwargs)
    lines = [f"{'keypoint':<14}{'pixel error':>12}{'rmse':>10}"]
    for name in true.keypoint_names:
        lines.append(f"{name:<14}{scores[f'pixel_error/{name}']:>12.3f}{scores[f'rmse/{name}']:>10.3f}")
    lines.append(f"{'mean':<14}{scores['pixel_error/mean']:>12.3f}{scores['rmse/mean']:>10.3f}")
    result = {"frames": len(rows_t), "scores": scores, "table": "\n".join(lines),
              "prediction": str(prediction), "truth": str(truth)}
    if report:
        path = Path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        plain = {k: v for k, v in result.items() if k != "table"}
        plain["scores"] = {k: (float(v) if np.isfinite(v) else None) for k, v in scores.items()}
        path.write_text(json.dumps(plain, indent=2))
    return result
