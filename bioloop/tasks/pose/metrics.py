"""Keypoint scores in frame pixels, shared by validation and ``bioloop evaluate``.

Inputs are ``pred`` and ``truth`` shaped (N, K, 2) in (x, y) pixels (a caller with an
animal axis flattens it to N * A rows, animals matched). A NaN truth point is not scored.
A NaN prediction of a scored point is a *miss*: it has no distance, so it is left out of
the pixel error and RMSE (``summarize`` reports the missed fraction), counts as outside
every PCK threshold and adds 0 to OKS.

Overall values pool every scored point (they are not means of per-keypoint values); a
value with nothing to score is NaN.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["OKS_THRESHOLDS", "pixel_error", "mean_pixel_error", "rmse", "pck", "oks",
           "bbox_area", "oks_map", "summarize"]

OKS_THRESHOLDS = tuple(np.round(np.arange(0.50, 0.951, 0.05), 2).tolist())  # COCO 0.50:0.05:0.95
_EPS = np.spacing(1)  # COCO's guard against a zero area


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    if pred.shape != truth.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and truth must both be (N, K, 2) "
                         f"(got {pred.shape} and {truth.shape})")
    return pred, truth


def _scored(truth: np.ndarray) -> np.ndarray:
    return ~np.isnan(truth).any(axis=-1)


def _nanmean(values: np.ndarray, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def pixel_error(pred, truth) -> np.ndarray:
    """(N, K) Euclidean distances in pixels; NaN where the truth or the prediction is NaN."""
    pred, truth = _pair(pred, truth)
    return np.sqrt(((pred - truth) ** 2).sum(axis=-1))


def mean_pixel_error(pred, truth) -> tuple[np.ndarray, float]:
    """Mean Euclidean pixel error: (per keypoint (K,), overall)."""
    d = pixel_error(pred, truth)
    return _nanmean(d, axis=0), float(_nanmean(d))


def rmse(pred, truth) -> tuple[np.ndarray, float]:
    """True root-mean-square of the pixel errors: (per keypoint (K,), overall).

    Note: Lightning Pose logs the *mean* pixel error under the name 'rmse'; that value is
    ``mean_pixel_error`` here. RMSE >= mean pixel error, equal only when all errors are equal.
    """
    d2 = pixel_error(pred, truth) ** 2
    return np.sqrt(_nanmean(d2, axis=0)), float(np.sqrt(_nanmean(d2)))


def pck(pred, truth, thresholds=(5.0, 10.0), normalize=None) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of scored points within each threshold: ((T, K) per keypoint, (T,) overall).

    A point is correct when its error is <= the threshold. With ``normalize`` (N,) the error
    of frame n is divided by ``normalize[n]`` first (e.g. a body length), so thresholds are
    fractions of that scale; frames whose scale is not a positive number are not scored.
    """
    pred, truth = _pair(pred, truth)
    d = pixel_error(pred, truth)
    scored = _scored(truth)
    if normalize is not None:
        scale = np.asarray(normalize, dtype=float).reshape(-1)
        if scale.shape != (d.shape[0],):
            raise ValueError(f"normalize must be one scale per frame, shape ({d.shape[0]},) "
                             f"(got {scale.shape})")
        good = np.isfinite(scale) & (scale > 0)
        scored &= good[:, None]
        d = d / np.where(good, scale, 1.0)[:, None]
    ts = np.asarray(thresholds, dtype=float).reshape(-1)
    hit = (d[None] <= ts[:, None, None]) & scored[None]  # NaN distance is never a hit
    with np.errstate(invalid="ignore", divide="ignore"):
        per_kp = hit.sum(axis=1) / scored.sum(axis=0)
        overall = hit.sum(axis=(1, 2)) / scored.sum()
    return per_kp.astype(float), np.asarray(overall, dtype=float)


def oks(pred, truth, sigmas, area) -> np.ndarray:
    """(N,) COCO object keypoint similarity; NaN for a frame with no scored keypoint.

    OKS = mean over scored keypoints of exp(-d^2 / (2 * area * (2 * sigma)^2)), as in
    pycocotools (``area`` is the object's area in pixels^2; sigmas are per keypoint).
    """
    pred, truth = _pair(pred, truth)
    n, k = truth.shape[:2]
    sig = np.broadcast_to(np.asarray(sigmas, dtype=float), (k,))
    s2 = np.broadcast_to(np.asarray(area, dtype=float).reshape(-1), (n,))
    d2 = ((pred - truth) ** 2).sum(axis=-1)
    e = d2 / ((2 * sig[None]) ** 2 * (s2[:, None] + _EPS) * 2)
    scored = _scored(truth)
    term = np.where(scored & ~np.isnan(e), np.exp(-np.nan_to_num(e)), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return term.sum(axis=1) / scored.sum(axis=1)


def bbox_area(truth) -> np.ndarray:
    """(...,) area of the box around the scored keypoints of each (.., K, 2) instance."""
    truth = np.asarray(truth, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        span = np.nanmax(truth, axis=-2) - np.nanmin(truth, axis=-2)
    return np.nan_to_num(span[..., 0] * span[..., 1])


def oks_map(pred, truth, sigmas, area, scores=None, thresholds=OKS_THRESHOLDS) -> float:
    """COCO-style mean AP over OKS thresholds 0.50:0.05:0.95.

    Single animal, (N, K, 2) inputs and ``area`` (N,): one prediction per frame, so AP at
    threshold t is the fraction of scored frames whose OKS >= t (COCO's AP when the correct
    predictions are also the most confident ones); frames without scored truth are skipped.

    Multi animal, (N, P, K, 2) predictions with ``scores`` (N, P), (N, G, K, 2) truth and
    ``area`` (N, G): per frame, predictions in descending score each take the unmatched
    truth instance of highest OKS if that OKS >= t (COCO's greedy matching); then over all
    frames, precision is interpolated at 101 recall points and averaged. All-NaN prediction
    or truth instances are absent; unlike pycocotools there is no max-detections cap and no
    'ignore' / crowd handling.
    """
    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    ts = np.asarray(thresholds, dtype=float)
    if pred.ndim == 3:
        o = oks(pred, truth, sigmas, area)
        o = o[~np.isnan(o)]
        return float(np.mean([(o >= t).mean() for t in ts])) if o.size else float("nan")
    if pred.ndim != 4 or truth.ndim != 4 or pred.shape[0] != truth.shape[0]:
        raise ValueError(f"multi-animal oks_map needs pred (N, P, K, 2) and truth "
                         f"(N, G, K, 2) (got {pred.shape} and {truth.shape})")
    n, p = pred.shape[:2]
    scores = np.ones((n, p)) if scores is None else np.asarray(scores, dtype=float)
    area = np.asarray(area, dtype=float).reshape(n, truth.shape[1])
    per_frame = []
    for i in range(n):
        keep_p = ~np.isnan(pred[i]).all(axis=(1, 2))
        keep_g = _scored(truth[i]).any(axis=1)
        sim = np.stack([oks(np.broadcast_to(q, truth[i][keep_g].shape), truth[i][keep_g],
                            sigmas, area[i][keep_g]) for q in pred[i][keep_p]]) \
            if keep_p.any() and keep_g.any() else np.zeros((keep_p.sum(), keep_g.sum()))
        per_frame.append((scores[i][keep_p], sim, int(keep_g.sum())))
    total = sum(g for _, _, g in per_frame)
    if total == 0:
        return float("nan")
    return float(np.mean([_average_precision(per_frame, t, total) for t in ts]))


def _average_precision(per_frame, t: float, total: int) -> float:
    conf, tp = [], []
    for score, sim, num_g in per_frame:
        taken = np.zeros(num_g, bool)
        for j in np.argsort(-score, kind="mergesort"):
            cand = np.where(taken, -1.0, sim[j]) if num_g else np.zeros(0)
            best = int(np.argmax(cand)) if num_g else -1
            hit = num_g > 0 and cand[best] >= t
            if hit:
                taken[best] = True
            conf.append(score[j])
            tp.append(hit)
    if not conf:
        return 0.0
    order = np.argsort(-np.asarray(conf), kind="mergesort")
    tp = np.asarray(tp, dtype=float)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall, precision = ctp / total, ctp / (ctp + cfp)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    padded = np.append(precision, 0.0)  # recall levels never reached score 0
    return float(padded[idx].mean())


def summarize(pred, truth, keypoint_names, *, thresholds=(5.0, 10.0), normalize=None,
              sigmas=None, area=None) -> dict[str, float]:
    """Named scalars: pixel_error/*, rmse/*, pck@<t>/*, missed/fraction, oks_map.

    '*' is 'mean' (all points pooled) or a keypoint name. (N, A, K, 2) inputs are flattened
    to N * A instances (animals matched by index; ``normalize``/``area`` then (N, A) or
    (N,)). oks_map is added when ``sigmas`` is given; ``area`` defaults to the box around
    each true instance (``bbox_area``).
    """
    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    if pred.ndim == 4:
        normalize, area = _per_instance(normalize, pred.shape), _per_instance(area, pred.shape)
        pred, truth = pred.reshape(-1, *pred.shape[2:]), truth.reshape(-1, *truth.shape[2:])
    names = list(keypoint_names)
    if len(names) != truth.shape[1]:
        raise ValueError(f"{len(names)} keypoint names for {truth.shape[1]} keypoints")
    out: dict[str, float] = {}
    for label, (per_kp, overall) in (("pixel_error", mean_pixel_error(pred, truth)),
                                     ("rmse", rmse(pred, truth))):
        out[f"{label}/mean"] = overall
        out.update({f"{label}/{n}": float(v) for n, v in zip(names, per_kp)})
    ts = np.asarray(thresholds, dtype=float).reshape(-1)
    per_kp, overall = pck(pred, truth, ts, normalize)
    for i, t in enumerate(ts):
        out[f"pck@{t:g}/mean"] = float(overall[i])
        out.update({f"pck@{t:g}/{n}": float(v) for n, v in zip(names, per_kp[i])})
    scored = _scored(truth)
    missed = scored & np.isnan(pred).any(axis=-1)
    out["missed/fraction"] = float(missed.sum() / scored.sum()) if scored.any() else float("nan")
    if sigmas is not None:
        out["oks_map"] = oks_map(pred, truth, sigmas, bbox_area(truth) if area is None else area)
    return out


def _per_instance(value, shape) -> np.ndarray | None:
    """(N,) or (N, A) values as (N * A,)."""
    if value is None:
        return None
    value = np.asarray(value, dtype=float).reshape(shape[0], -1)
    return np.broadcast_to(value, shape[:2]).reshape(-1)
