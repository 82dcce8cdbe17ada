"""Tracking scores: py-motmetrics (detection-aware), TrackEval's HOTA (``metrics_hota``) and the Cell
Tracking Challenge measures (``metrics_ctc``: DET, TRA, CT, TF, BC(i), CCA).

``mot_metrics`` matches predictions to ground truth by position in every frame (IoU of boxes or
centroid distance), never by id, so a detector's misses and false alarms count. Distances are
computed here (motmetrics 1.4's own helpers call np.asfarray, gone in NumPy 2). motmetrics' MOTP
is a mean *distance*: 1 - IoU with box matching (0 is perfect), pixels with centroid matching.

Untracked predicted instances (track id -1) are detections too: with ``untracked="count"`` (the
default) each is a one-frame track of its own, so it is a false positive where it covers no true
object and a match with an identity switch where it does; ``untracked="exclude"`` leaves them out
(``untracked_count`` tells how many there were, and evaluate prints it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.metrics_ctc import ctc_scores, read_ctc_folder
from bioloop.tasks.tracking.types import Instances

__all__ = ["accumulate", "compute_many", "ctc_scores", "mot_metrics", "read_ctc_folder",
           "untracked_count", "with_untracked"]

DEFAULT_MOT_METRICS = ("num_switches", "num_false_positives", "num_misses", "mota", "idf1")


def mot_metric_names() -> list[str]:
    import motmetrics as mm

    return list(mm.metrics.create().metrics.keys())


def _check_names(metrics: Sequence[str], where: str) -> list[str]:
    names = mot_metric_names()
    for m in metrics:
        if m not in names:
            raise ConfigError.at(where, f"unknown motmetrics metric {m!r}{did_you_mean(m, names)}",
                                 fix="choose from " + ", ".join(names))
    return list(metrics)


def mot_distances(gt: Instances, pred: Instances, match: str, threshold: float) -> np.ndarray:
    """(n_gt, n_pred): 1 - IoU (NaN where IoU < threshold) or pixels (NaN beyond threshold)."""
    if match == "iou":
        from bioloop.tasks.tracking.tracker import pairwise_iou

        iou = pairwise_iou(gt.boxes, pred.boxes)
        return np.where(iou >= threshold, 1.0 - iou, np.nan)
    d = np.linalg.norm(gt.centroids[:, None] - pred.centroids[None], axis=-1)
    return np.where(d <= threshold, d, np.nan)


UNTRACKED = ("count", "exclude")
_FRESH = 1 << 40  # ids given to untracked instances, above any real track id


def untracked_count(frames: Sequence[Instances]) -> int:
    return int(sum((f.track_ids < 0).sum() for f in frames))


def with_untracked(frames: Sequence[Instances], untracked: str = "count", where: str = "evaluate") -> list[Instances]:
    """``frames`` with untracked instances (id -1) given one-frame ids of their own ("count") or
    dropped ("exclude")."""
    if untracked not in UNTRACKED:
        raise ConfigError.at(f"{where} untracked", "must be 'count' or 'exclude'", got=untracked,
                             fix="count untracked instances as detections, or exclude them")
    out, fresh = [], _FRESH
    for f in frames:
        lost = f.track_ids < 0
        if not lost.any():
            out.append(f)
        elif untracked == "count":
            ids = f.track_ids.copy()
            ids[lost] = np.arange(fresh, fresh + lost.sum())
            fresh += int(lost.sum())
            out.append(Instances(f.frame, f.points, f.boxes, ids, scores=f.scores, mask_ids=f.mask_ids, z=f.z))
        else:
            keep = ~lost
            pts = f.points[keep] if f.points.size else np.zeros((int(keep.sum()), 0, 2))
            out.append(Instances(f.frame, pts, f.boxes[keep], f.track_ids[keep], scores=f.scores[keep],
                                 mask_ids=None if f.mask_ids is None else f.mask_ids[keep],
                                 z=None if f.z is None else f.z[keep]))
    return out


def _threshold(match: str, threshold: float | None, where: str) -> float:
    if match not in ("iou", "centroid"):
        raise ConfigError.at(f"{where} match", "must be 'iou' or 'centroid'", got=match,
                             fix="match boxes by IoU or points by centroid distance")
    if threshold is None:
        if match == "centroid":
            raise ConfigError.at(f"{where} threshold", "centroid matching needs a distance in pixels",
                                 got=None, fix="pass threshold=<pixels>, e.g. 10")
        return 0.5
    return threshold


def accumulate(gt: Sequence[Instances], pred: Sequence[Instances], match: str = "iou",
               threshold: float | None = None, untracked: str = "count", where: str = "metrics",
               distance_fn=None):
    """A motmetrics ``MOTAccumulator`` of one sequence; frames pair up by ``Instances.frame``.

    ``distance_fn(gt_instances, pred_instances)`` -> (n_gt, n_pred) distances (NaN: no match)
    replaces ``match``/``threshold`` (e.g. mask overlap of CTC label images)."""
    import motmetrics as mm

    if distance_fn is None:
        threshold = _threshold(match, threshold, where)

        def distance_fn(g, p):
            return mot_distances(g, p, match, threshold)
    pred = with_untracked(pred, untracked, where)
    g_by, p_by = {f.frame: f for f in gt}, {f.frame: f for f in pred}
    acc = mm.MOTAccumulator(auto_id=False)
    empty = Instances(frame=-1, points=np.zeros((0, 0, 2)), boxes=np.zeros((0, 4)), track_ids=[])
    for t in sorted(set(g_by) | set(p_by)):
        g, p = g_by.get(t, empty), p_by.get(t, empty)
        acc.update(g.track_ids.tolist(), p.track_ids.tolist(), distance_fn(g, p), frameid=int(t))
    return acc


def mot_metrics(gt: Sequence[Instances], pred: Sequence[Instances],
                metrics: Sequence[str] = DEFAULT_MOT_METRICS, match: str = "iou",
                threshold: float | None = None, where: str = "metrics", untracked: str = "count") -> dict:
    """Score predicted tracks against GT with py-motmetrics; frames pair up by ``Instances.frame``.

    ``match="iou"``: boxes match when IoU >= ``threshold`` (default 0.5); ``"centroid"``: when
    centroids are at most ``threshold`` pixels apart (required). ``untracked``: see the module
    docstring. Returns ``{name: value}`` (floats for scalar metrics).
    """
    import motmetrics as mm

    names = _check_names(metrics, where)
    acc = accumulate(gt, pred, match, threshold, untracked, where)
    out = mm.metrics.create().compute(acc, metrics=names, return_dataframe=False)
    return {k: (float(v) if np.isscalar(v) else v) for k, v in out.items()}


def compute_many(accs, names: Sequence[str], metrics: Sequence[str], where: str = "metrics") -> dict:
    """motmetrics' ``compute_many(accs, generate_overall=True)`` as {row name: {metric: value}}."""
    import motmetrics as mm

    metric_names = _check_names(metrics, where)
    if "OVERALL" in names or len(set(names)) != len(names):
        raise DataError.at(where, "sequence names must be unique and not 'OVERALL'", got=list(names),
                           fix="rename the sequences")
    frame = mm.metrics.create().compute_many(accs, metrics=metric_names, names=list(names),
                                            generate_overall=True)
    return {str(row): {k: float(frame.loc[row, k]) for k in metric_names} for row in frame.index}
