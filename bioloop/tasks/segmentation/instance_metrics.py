"""Instance and semantic scores for label volumes (CellMap challenge conventions).

Instances are matched one-to-one by IoU (optimal assignment, a pair counts when IoU > the
threshold). From the matches:

    precision = TP / n_pred, recall = TP / n_truth, F1 = RQ = 2 TP / (n_truth + n_pred);
    SQ = mean IoU of the matched pairs (= mean_matched_iou); PQ = SQ * RQ;
    normalized_hausdorff = sum over matched pairs of 1.01 ** (-HD_nm / ||voxel_size||)
                           divided by max(n_truth, n_pred), so missing and extra objects score 0.

Conventions for empty cases: empty truth and empty prediction score 1 on every instance
score (nothing to find, nothing wrongly found); otherwise a ratio with a zero denominator,
and SQ without any match, score 0 - never NaN - so predicting nothing or predicting
speckle never scores better than a real attempt. Semantic scores keep the NaN convention
of :mod:`bioloop.tasks.segmentation.metrics` (undefined when the denominator is 0).

Connectomics scores from the contingency table ``n_ij`` (voxels with truth id i and predicted id j),
truth sizes ``t_i`` and predicted sizes ``s_j`` over the ``N`` voxels counted (logs base 2):

    voi split = H(pred | truth) = -sum n_ij/N log2(n_ij / t_i)   (over-segmentation, in bits)
    voi merge = H(truth | pred) = -sum n_ij/N log2(n_ij / s_j)   (under-segmentation)
    adapted Rand: P = sum n_ij^2 - N, T = sum t_i^2 - N, S = sum s_j^2 - N (ordered pairs of distinct
    voxels in the same segment); precision = P / S, recall = P / T, error = 1 - 2P / (S + T).

These are scikit-image's ``variation_of_information`` and ``adapted_rand_error`` (tested to agree);
scikit-image returns the Rand precision and recall swapped with respect to its own docstring
(scikit-image issue 6485), bioloop names them as documented: precision falls with false merges.
Defaults as scikit-image: VOI counts every voxel (background 0 is a segment), adapted Rand ignores
voxels whose truth is 0. Volumes with nothing counted score 0 (VOI) and error 0, precision and
recall 1 (adapted Rand); a ratio 0/0 (only one-voxel segments) is 1. Crops pool exactly by summing
the counts of :func:`segmentation_counts` (segments of different crops never share a voxel).
"""

from __future__ import annotations

import math
import attrs
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = ["InstanceMatch", "adapted_rand", "instance_counts", "instance_scores", "match_instances",
           "pool_instance_counts", "pool_segmentation_counts", "scores_from_segmentation_counts",
           "segmentation_counts", "semantic_counts", "semantic_scores", "voi"]

COUNT_KEYS = ("n_truth", "n_pred", "tp", "fp", "fn", "iou_sum", "nhd_sum")


@attrs.frozen
class InstanceMatch:
    """Result of :func:`match_instances`: ids, IoU matrix and the optimal one-to-one pairs."""

    truth_ids: np.ndarray  # (n_truth,) the non-zero truth ids
    pred_ids: np.ndarray  # (n_pred,) the non-zero predicted ids
    iou: np.ndarray  # (n_truth, n_pred) float64
    pairs: list[tuple[int, int]]  # matched (truth id, pred id)
    matched_iou: np.ndarray  # IoU of each matched pair

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return len(self.pred_ids) - len(self.pairs)

    @property
    def fn(self) -> int:
        return len(self.truth_ids) - len(self.pairs)


def match_instances(truth_ids, pred_ids, iou_threshold: float = 0.5) -> InstanceMatch:
    """Match truth and predicted instances (0 = background) one-to-one by IoU > ``iou_threshold``."""
    truth, pred = np.asarray(truth_ids).ravel(), np.asarray(pred_ids).ravel()
    truth, pred = truth.astype(np.int64, copy=False), pred.astype(np.int64, copy=False)  # one id type
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction must have the same shape (got {np.shape(truth_ids)} "
                         f"and {np.shape(pred_ids)})")
    t_ids, t_sizes = np.unique(truth[truth != 0], return_counts=True)
    p_ids, p_sizes = np.unique(pred[pred != 0], return_counts=True)
    iou = np.zeros((len(t_ids), len(p_ids)))
    both = (truth != 0) & (pred != 0)
    if both.any():
        # one pass over the overlapping voxels: unique (truth, pred) pairs and their voxel counts
        pairs, inter = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
        rows, cols = np.searchsorted(t_ids, pairs[0]), np.searchsorted(p_ids, pairs[1])
        iou[rows, cols] = inter / (t_sizes[rows] + p_sizes[cols] - inter)
    cand_r, cand_c = np.nonzero(iou > iou_threshold)
    matched: list[tuple[int, int]] = []
    values: list[float] = []
    if len(cand_r):
        rows, cols = np.unique(cand_r), np.unique(cand_c)
        sub = iou[np.ix_(rows, cols)]
        sub = np.where(sub > iou_threshold, sub, 0.0)
        r, c = linear_sum_assignment(sub, maximize=True)
        for i, j in zip(r, c):
            if sub[i, j] > iou_threshold:
                matched.append((int(t_ids[rows[i]]), int(p_ids[cols[j]])))
                values.append(float(sub[i, j]))
    return InstanceMatch(t_ids, p_ids, iou, matched, np.asarray(values, dtype=np.float64))


def hausdorff_distance(truth_mask: np.ndarray, pred_mask: np.ndarray, voxel_size) -> float:
    """Symmetric Hausdorff distance (nm) between two non-empty boolean masks."""
    box = _bounding_box(truth_mask | pred_mask)
    t, p = truth_mask[box], pred_mask[box]
    sampling = tuple(float(s) for s in voxel_size)
    to_truth = ndimage.distance_transform_edt(~t, sampling=sampling)  # distance of every voxel to the truth
    to_pred = ndimage.distance_transform_edt(~p, sampling=sampling)
    return float(max(to_truth[p].max(), to_pred[t].max()))


def instance_counts(truth_ids, pred_ids, *, voxel_size, iou_threshold: float = 0.5) -> dict[str, float]:
    """Poolable counts: n_truth, n_pred, tp, fp, fn, iou_sum (matched IoUs), nhd_sum (normalised HDs)."""
    truth, pred = np.asarray(truth_ids), np.asarray(pred_ids)
    match = match_instances(truth, pred, iou_threshold)
    voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (truth.ndim,))
    norm = float(np.linalg.norm(voxel_size))
    nhd_sum = 0.0
    if match.pairs:
        t_boxes, p_boxes = _boxes(truth, match.pairs, 0), _boxes(pred, match.pairs, 1)
        for (t_id, p_id), tb, pb in zip(match.pairs, t_boxes, p_boxes):
            box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(tb, pb))
            hd = hausdorff_distance(truth[box] == t_id, pred[box] == p_id, voxel_size)
            nhd_sum += 1.01 ** (-hd / norm)
    return {"n_truth": len(match.truth_ids), "n_pred": len(match.pred_ids), "tp": match.tp, "fp": match.fp,
            "fn": match.fn, "iou_sum": float(match.matched_iou.sum()), "nhd_sum": nhd_sum}


def pool_instance_counts(parts) -> dict[str, float]:
    """Sum the counts of several crops; the normalised-HD denominator is the sum of max(n_truth, n_pred)."""
    total = {k: 0 for k in COUNT_KEYS}
    total["nhd_den"] = 0
    for part in parts:
        for k in COUNT_KEYS:
            total[k] += part[k]
        total["nhd_den"] += part.get("nhd_den", max(part["n_truth"], part["n_pred"]))
    return total


def scores_from_instance_counts(counts: dict) -> dict[str, float]:
    """precision, recall, f1, rq, sq, mean_matched_iou, pq, normalized_hausdorff (+ the counts)."""
    n_t, n_p, tp = counts["n_truth"], counts["n_pred"], counts["tp"]
    den = counts.get("nhd_den", max(n_t, n_p))
    out = {k: counts[k] for k in ("n_truth", "n_pred", "tp", "fp", "fn")}
    if n_t == 0 and n_p == 0:  # nothing to find and nothing found: perfect by convention
        out.update(precision=1.0, recall=1.0, f1=1.0, rq=1.0, sq=1.0, mean_matched_iou=1.0, pq=1.0,
                   normalized_hausdorff=1.0)
        return out
    f1 = 2 * tp / (n_t + n_p)
    sq = counts["iou_sum"] / tp if tp else 0.0
    out.update(precision=tp / n_p if n_p else 0.0, recall=tp / n_t if n_t else 0.0, f1=f1, rq=f1, sq=sq,
               mean_matched_iou=sq, pq=sq * f1, normalized_hausdorff=counts["nhd_sum"] / den if den else 1.0)
    return out


def instance_scores(truth_ids, pred_ids, *, voxel_size=1.0, iou_threshold: float = 0.5) -> dict[str, float]:
    """Instance scores of one volume (see the module docstring for definitions and conventions)."""
    return scores_from_instance_counts(instance_counts(truth_ids, pred_ids, voxel_size=voxel_size,
                                                       iou_threshold=iou_threshold))


def semantic_counts(truth_mask, pred_mask) -> dict[str, int]:
    """Voxel counts tp, fp, fn of two boolean masks."""
    t, p = np.asarray(truth_mask, bool), np.asarray(pred_mask, bool)
    return {"tp": int(np.count_nonzero(t & p)), "fp": int(np.count_nonzero(p & ~t)),
            "fn": int(np.count_nonzero(t & ~p))}


def semantic_scores(counts: dict) -> dict[str, float]:
    """iou, dice, precision, recall from pooled counts (NaN where undefined, as in metrics.py)."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    ratio = lambda num, den: num / den if den > 0 else math.nan  # noqa: E731
    return {"iou": ratio(tp, tp + fp + fn), "dice": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def segmentation_counts(pred, truth, *, voi_ignore=(), rand_ignore=(0,)) -> dict[str, float]:
    """Poolable VOI and adapted-Rand counts of one volume. VOI leaves out voxels whose truth id is in
    ``voi_ignore``, adapted Rand those in ``rand_ignore`` (scikit-image's defaults). Keys: ``voxels``,
    ``split_bits`` and ``merge_bits`` (N times the conditional entropies); ``pairs_both``, ``pairs_truth``,
    ``pairs_pred`` (P, T, S of the module docstring)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"truth and prediction must have the same shape (got {truth.shape} and {pred.shape})")
    truth, pred = truth.ravel().astype(np.int64, copy=False), pred.ravel().astype(np.int64, copy=False)
    t_ids, t_index = np.unique(truth, return_inverse=True)
    p_ids, p_index = np.unique(pred, return_inverse=True)
    joint, n_ij = np.unique(t_index.ravel() * len(p_ids) + p_index.ravel(), return_counts=True)
    row, col = joint // max(1, len(p_ids)), joint % max(1, len(p_ids))
    out = {}
    for kind, ignore in (("voi", voi_ignore), ("rand", rand_ignore)):
        keep = ~np.isin(t_ids[row], np.asarray(ignore, dtype=np.int64)) if len(ignore) else np.ones(len(row), bool)
        n = n_ij[keep].astype(np.int64)
        t_sizes, s_sizes = np.bincount(row[keep], weights=n), np.bincount(col[keep], weights=n)
        total = int(n.sum())
        if kind == "voi":
            f = n.astype(np.float64)
            split = float(-(f * np.log2(f / t_sizes[row[keep]])).sum()) if total else 0.0
            merge = float(-(f * np.log2(f / s_sizes[col[keep]])).sum()) if total else 0.0
            out.update(voxels=total, split_bits=max(split, 0.0), merge_bits=max(merge, 0.0))
        else:  # ordered pairs of distinct voxels in the same segment
            square = lambda v: int((np.asarray(v, np.int64) ** 2).sum()) - total  # noqa: E731
            out.update(pairs_both=square(n), pairs_truth=square(t_sizes), pairs_pred=square(s_sizes))
    return out


def pool_segmentation_counts(parts) -> dict[str, float]:
    """Sum the :func:`segmentation_counts` of several crops (exact: crops share no segment)."""
    keys = ("voxels", "split_bits", "merge_bits", "pairs_both", "pairs_truth", "pairs_pred")
    return {k: sum(part[k] for part in parts) for k in keys}


def scores_from_segmentation_counts(counts: dict) -> dict[str, float]:
    """voi_split, voi_merge, voi (their sum), arand_error, arand_precision, arand_recall."""
    n = counts["voxels"]
    split = counts["split_bits"] / n if n else 0.0
    merge = counts["merge_bits"] / n if n else 0.0
    both, truth, pred = counts["pairs_both"], counts["pairs_truth"], counts["pairs_pred"]
    ratio = lambda num, den: num / den if den else 1.0  # noqa: E731 - 0/0: only one-voxel segments
    return {"voi_split": split, "voi_merge": merge, "voi": split + merge,
            "arand_error": 1.0 - ratio(2 * both, truth + pred), "arand_precision": ratio(both, pred),
            "arand_recall": ratio(both, truth)}


def voi(pred, truth, *, ignore_truth=()) -> dict[str, float]:
    """Variation of information in bits: ``split`` = H(pred | truth), ``merge`` = H(truth | pred)."""
    scores = scores_from_segmentation_counts(segmentation_counts(pred, truth, voi_ignore=ignore_truth))
    return {"split": scores["voi_split"], "merge": scores["voi_merge"]}


def adapted_rand(pred, truth, *, ignore_truth=(0,)) -> dict[str, float]:
    """Adapted Rand ``error`` with its ``precision`` and ``recall`` (SNEMI3D); truth 0 is ignored by default."""
    scores = scores_from_segmentation_counts(segmentation_counts(pred, truth, rand_ignore=ignore_truth))
    return {"error": scores["arand_error"], "precision": scores["arand_precision"],
            "recall": scores["arand_recall"]}


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = ndimage.find_objects(mask.astype(np.uint8))
    return box[0] if box and box[0] is not None else tuple(slice(0, 0) for _ in mask.shape)


def _boxes(labels: np.ndarray, pairs, which: int) -> list[tuple[slice, ...]]:
    """Bounding boxes of the ids in ``pairs[:, which]`` (one find_objects pass on a compact relabelling)."""
    ids = np.asarray([p[which] for p in pairs])
    order = np.unique(ids)
    compact = np.zeros(labels.shape, np.int32)
    inside = np.isin(labels, order)
    compact[inside] = np.searchsorted(order, labels[inside]) + 1
    found = ndimage.find_objects(compact)
    return [found[int(np.searchsorted(order, i))] for i in ids]
