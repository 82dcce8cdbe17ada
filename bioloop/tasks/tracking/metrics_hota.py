"""HOTA, DetA, AssA (Luiten et al. 2021) with TrackEval's definitions, per sequence and combined.

For each localisation threshold alpha in 0.05, 0.10, ..., 0.95 the detections of a frame are
matched one-to-one (Hungarian) maximising the similarity (box IoU) weighted by how often the two
ids overlap over the whole sequence; a pair with similarity >= alpha is a true positive.
DetA = TP / (TP + FN + FP); AssA = mean over TPs of TPA / (TPA + FNA + FPA) of their id pair;
HOTA = sqrt(DetA x AssA); the reported values are means over the 19 alphas (TrackEval's summary).
LocA is the mean similarity of the TPs. Several sequences combine as TrackEval's
``combine_sequences``: counts summed, AssA/AssRe/AssPr and LocA weighted by each sequence's TPs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from bioloop.tasks.tracking.types import Instances

__all__ = ["ALPHAS", "HOTA_FIELDS", "hota", "hota_combine", "hota_summary"]

ALPHAS = np.arange(0.05, 0.99, 0.05)
HOTA_FIELDS = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA")
_EPS = np.finfo(float).eps


def _index(frames: Sequence[Instances]) -> dict[int, int]:
    ids = sorted({int(i) for f in frames for i in f.track_ids})
    return {k: j for j, k in enumerate(ids)}


def hota(gt: Sequence[Instances], pred: Sequence[Instances], similarity=None) -> dict[str, np.ndarray]:
    """Per-alpha arrays of one sequence (frames pair up by ``Instances.frame``; untracked ids must
    already be resolved, see ``metrics.with_untracked``). ``similarity(g, p)`` -> (n_g, n_p) in
    [0, 1]; default box IoU."""
    if similarity is None:
        from bioloop.tasks.tracking.tracker import pairwise_iou

        def similarity(g, p):
            return pairwise_iou(g.boxes, p.boxes)
    g_by, p_by = {f.frame: f for f in gt}, {f.frame: f for f in pred}
    g_idx, p_idx = _index(gt), _index(pred)
    frames = []
    for t in sorted(set(g_by) | set(p_by)):
        g, p = g_by.get(t), p_by.get(t)
        gi = np.array([g_idx[int(i)] for i in g.track_ids], np.int64) if g is not None else np.zeros(0, np.int64)
        pi = np.array([p_idx[int(i)] for i in p.track_ids], np.int64) if p is not None else np.zeros(0, np.int64)
        sim = similarity(g, p) if len(gi) and len(pi) else np.zeros((len(gi), len(pi)))
        frames.append((gi, pi, np.asarray(sim, np.float64)))
    n_a = len(ALPHAS)
    res = {k: np.zeros(n_a) for k in ("HOTA_TP", "HOTA_FN", "HOTA_FP", "AssA", "AssRe", "AssPr", "LocA")}
    n_gt_dets, n_pr_dets = sum(len(f[0]) for f in frames), sum(len(f[1]) for f in frames)
    if n_pr_dets == 0 or n_gt_dets == 0:
        res["HOTA_FN"][:] = n_gt_dets
        res["HOTA_FP"][:] = n_pr_dets
        res["LocA"][:] = 1.0
        return _final(res)
    potential = np.zeros((len(g_idx), len(p_idx)))
    g_count, p_count = np.zeros((len(g_idx), 1)), np.zeros((1, len(p_idx)))
    for gi, pi, sim in frames:
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        part = np.zeros_like(sim)
        ok = denom > 0 + _EPS
        part[ok] = sim[ok] / denom[ok]
        potential[gi[:, None], pi[None, :]] += part
        g_count[gi] += 1
        p_count[0, pi] += 1
    alignment = potential / (g_count + p_count - potential)
    matches = [np.zeros_like(potential) for _ in ALPHAS]
    for gi, pi, sim in frames:
        if not len(gi) or not len(pi):
            res["HOTA_FP"] += len(pi)
            res["HOTA_FN"] += len(gi)
            continue
        rows, cols = linear_sum_assignment(-(alignment[gi[:, None], pi[None, :]] * sim))
        for a, alpha in enumerate(ALPHAS):
            ok = sim[rows, cols] >= alpha - _EPS
            r, c = rows[ok], cols[ok]
            res["HOTA_TP"][a] += len(r)
            res["HOTA_FN"][a] += len(gi) - len(r)
            res["HOTA_FP"][a] += len(pi) - len(r)
            if len(r):
                res["LocA"][a] += sim[r, c].sum()
                matches[a][gi[r], pi[c]] += 1
    for a in range(n_a):
        m = matches[a]
        tp = np.maximum(1, res["HOTA_TP"][a])
        res["AssA"][a] = np.sum(m * (m / np.maximum(1, g_count + p_count - m))) / tp
        res["AssRe"][a] = np.sum(m * (m / np.maximum(1, g_count))) / tp
        res["AssPr"][a] = np.sum(m * (m / np.maximum(1, p_count))) / tp
    res["LocA"] = np.maximum(1e-10, res["LocA"]) / np.maximum(1e-10, res["HOTA_TP"])
    return _final(res)


def _final(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tp, fn, fp = res["HOTA_TP"], res["HOTA_FN"], res["HOTA_FP"]
    res["DetRe"] = tp / np.maximum(1, tp + fn)
    res["DetPr"] = tp / np.maximum(1, tp + fp)
    res["DetA"] = tp / np.maximum(1, tp + fn + fp)
    res["HOTA"] = np.sqrt(res["DetA"] * res["AssA"])
    return res


def hota_combine(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several sequences' per-alpha arrays combined as TrackEval's ``combine_sequences``."""
    res = {k: sum(p[k] for p in parts) for k in ("HOTA_TP", "HOTA_FN", "HOTA_FP")}
    tp = np.maximum(1.0, res["HOTA_TP"])
    for k in ("AssRe", "AssPr", "AssA"):
        res[k] = sum(p[k] * p["HOTA_TP"] for p in parts) / tp
    loc = sum(p["LocA"] * p["HOTA_TP"] for p in parts)
    res["LocA"] = np.maximum(1e-10, loc) / np.maximum(1e-10, res["HOTA_TP"])
    return _final(res)


def hota_summary(res: dict[str, np.ndarray]) -> dict[str, float]:
    """The alpha-averaged values TrackEval reports (HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA)."""
    return {k: float(np.mean(res[k])) for k in HOTA_FIELDS}
