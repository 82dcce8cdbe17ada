"""Score a DLC-style prediction CSV against a labels file with the metrics validation uses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bioloop.errors import ConfigError, DataError


def _key(path: str, index) -> str:
    """Frames match by their folder and file name (labeled-data/<video>/imgNNNN.png), else by index."""
    return f"{Path(path).parent.name}/{Path(path).name}" if path else str(index)


def match_animals(pred, true) -> np.ndarray:
    """Predictions (A_true, K, 2) for one frame's true animals ``true`` (A_true, K, 2).

    Predicted animals ``pred`` (A_pred, K, 2) are assigned to true ones by the Hungarian algorithm
    on the mean distance over the keypoints both have; a true animal left without a prediction
    (fewer predictions, or none sharing a keypoint with it) gets NaN: its keypoints count as missed.
    """
    from scipy.optimize import linear_sum_assignment

    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    out = np.full(true.shape, np.nan)
    if not len(pred) or not len(true):
        return out
    dist = np.linalg.norm(true[:, None] - pred[None], axis=-1)  # (A_true, A_pred, K)
    shared = np.isfinite(dist)
    count = shared.sum(-1)
    mean = np.where(shared, dist, 0.0).sum(-1) / np.maximum(count, 1)
    cost = np.where(count > 0, mean, _NO_MATCH)
    for r, c in zip(*linear_sum_assignment(cost)):
        if count[r, c]:
            out[r] = pred[c]
    return out


_NO_MATCH = 1e12  # cost of pairing animals without a shared keypoint (such pairs are dropped)


def evaluate_pose(cfg, *, prediction, truth, report=None, split=None, rows=None) -> dict:
    """Mean pixel error, RMSE, PCK (and OKS mAP with eval.oks_sigmas) per keypoint, in frame pixels.

    With several animals in the prediction or the labels, each labeled animal is scored against
    the prediction ``match_animals`` pairs it with (unmatched: missed); ``"animals"`` counts them.
    ``split`` (train/val/test) scores only the labeled frames of that split of the run (its
    ``split.csv``); None or "all" every labeled frame. ``rows`` (label rows) replaces the split's
    choice (a multi-view project picks them once, from its first view).
    """
    from bioloop.tasks.pose.labels import read_labels
    from bioloop.tasks.pose.metrics import bbox_area, summarize

    pred, true = read_labels(prediction), read_labels(truth)
    chosen = split_frames_of_run(cfg, truth, true, split) if rows is None else rows
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
    wanted = None if chosen is None else set(int(i) for i in chosen)
    for i, path in enumerate(true.image_paths):
        if wanted is not None and i not in wanted:
            continue
        index = None if true.frame_indices is None else int(true.frame_indices[i])
        j = frames.get(_key(path, index))
        if j is not None:
            rows_t.append(i)
            rows_p.append(j)
    if not rows_t:
        raise DataError.at(str(prediction), "no predicted frame matches a labeled frame of " + str(truth)
                           + ("" if chosen is None else f" in the {split} split"),
                           fix="predict the labeled images (or the video the labels come from)")
    if pred.num_animals == 1 and true.num_animals == 1:
        p = pred.keypoints[rows_p][:, 0][:, order]
        t = true.keypoints[rows_t][:, 0]
    else:  # several animals: match them per frame, score each labeled animal
        matched = [match_animals(pred.keypoints[j][:, order], true.keypoints[i]) for i, j in zip(rows_t, rows_p)]
        p, t = np.concatenate(matched), true.keypoints[rows_t].reshape(-1, *true.keypoints.shape[2:])
        keep = np.isfinite(t).all(-1).any(-1)  # animals absent from a frame are not scored
        p, t = p[keep], t[keep]
    sigmas = cfg.eval.oks_sigmas
    kwargs = {}
    if sigmas is not None:
        kwargs = {"sigmas": np.broadcast_to(np.asarray(sigmas, float), (t.shape[1],)), "area": bbox_area(t)}
    scores = summarize(p, t, list(true.keypoint_names), thresholds=tuple(cfg.eval.pck_thresholds), **kwargs)
    result = {"frames": len(rows_t), "animals": len(t), "scores": scores,
              "table": score_table(scores, true.keypoint_names), "prediction": str(prediction),
              "truth": str(truth), "split": split or "all"}
    if report:
        write_report(report, result)
    return result


def score_table(scores: dict, names) -> str:
    """Per keypoint pixel error and RMSE, then their means, as a fixed-width text table."""
    lines = [f"{'keypoint':<14}{'pixel error':>12}{'rmse':>10}"]
    for name in names:
        lines.append(f"{name:<14}{scores[f'pixel_error/{name}']:>12.3f}{scores[f'rmse/{name}']:>10.3f}")
    lines.append(f"{'mean':<14}{scores['pixel_error/mean']:>12.3f}{scores['rmse/mean']:>10.3f}")
    return "\n".join(lines)


def write_report(report, result: dict) -> Path:
    """``result`` as JSON (without its text table; NaN scores as null)."""
    path = Path(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v for k, v in result.items() if k != "table"}
    plain["scores"] = {k: (float(v) if np.isfinite(v) else None) for k, v in result["scores"].items()}
    path.write_text(json.dumps(plain, indent=2))
    return path


def split_frames_of_run(cfg, truth, labels, split: str | None) -> np.ndarray | None:
    """Indices of ``labels`` (read from ``truth``) in ``split`` of the run's split.csv; None for all.

    ``split`` is train/val/test/all or None (all, saying once that training frames are included
    when the run has a split file).
    """
    from bioloop.tasks.pose.split import SPLITS, read_split

    where = f"{cfg.source.name if cfg.source else 'config'}: evaluate --split"
    path = Path(cfg.run_dir) / "split.csv"
    if split in (None, "all"):
        from bioloop.tasks.pose.task import labels_path

        if split is None and path.is_file() and Path(truth).resolve() == labels_path(cfg).resolve():
            print(f"evaluate: scoring every labeled frame of {truth}, training frames included; "
                  "pass --split test (or val, train) to score one split of the run", file=sys.stderr)
        return None
    if split not in SPLITS:
        raise ConfigError.at(where, "unknown split", got=split, fix="use train, val, test or all")
    if not path.is_file():
        raise DataError.at(str(path), "the run has no split file, so --split cannot choose frames",
                           fix="train the config first (training writes split.csv), or drop --split")
    frames = read_split(path, labels)[split]
    if not len(frames):
        raise DataError.at(str(path), f"the {split} split of this run is empty", got=split,
                           fix="choose another split (a test split needs train_prob + val_prob < 1)")
    return frames
