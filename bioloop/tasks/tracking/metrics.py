"""Tracking scores: py-motmetrics (detection-aware) and Cell Tracking Challenge DET/TRA (AOGM).

``mot_metrics`` matches predictions to ground truth by position in every frame (IoU of boxes or
centroid distance), never by id, so a detector's misses and false alarms count. Distances are
computed here (motmetrics 1.4's own helpers call np.asfarray, gone in NumPy 2).
``ctc_scores`` follows Matula et al. 2015: a result mask matches a GT mask covering > 50% of it;
AOGM-D = 5 NS + 10 FN + 1 FP, AOGM = AOGM-D + 1 ED + 1.5 EA + 1 EC, each normalised by the cost
of building the GT graph from nothing (10 per node, 1.5 per edge).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.types import Instances

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


def mot_metrics(gt: Sequence[Instances], pred: Sequence[Instances],
                metrics: Sequence[str] = DEFAULT_MOT_METRICS, match: str = "iou",
                threshold: float | None = None, where: str = "metrics") -> dict:
    """Score predicted tracks against GT with py-motmetrics; frames pair up by ``Instances.frame``.

    ``match="iou"``: boxes match when IoU >= ``threshold`` (default 0.5); ``"centroid"``: when
    centroids are at most ``threshold`` pixels apart (required). Predictions with id -1
    (untracked) are ignored. Returns ``{name: value}`` (floats for scalar metrics).
    """
    import motmetrics as mm

    names = _check_names(metrics, where)
    if match not in ("iou", "centroid"):
        raise ConfigError.at(f"{where} match", "must be 'iou' or 'centroid'", got=match,
                             fix="match boxes by IoU or points by centroid distance")
    if threshold is None:
        if match == "centroid":
            raise ConfigError.at(f"{where} threshold",
                                 "centroid matching needs a distance in pixels",
                                 got=None, fix="pass threshold=<pixels>, e.g. 10")
        threshold = 0.5
    g_by, p_by = {f.frame: f for f in gt}, {f.frame: f for f in pred}
    acc = mm.MOTAccumulator(auto_id=False)
    empty = Instances(frame=-1, points=np.zeros((0, 0, 2)), boxes=np.zeros((0, 4)), track_ids=[])
    for t in sorted(set(g_by) | set(p_by)):
        g, p = g_by.get(t, empty), p_by.get(t, empty)
        keep = p.track_ids >= 0
        if not keep.all():
            pts = p.points[keep] if p.points.size else np.zeros((keep.sum(), 0, 2))
            p = Instances(frame=t, points=pts, boxes=p.boxes[keep], track_ids=p.track_ids[keep])
        acc.update(g.track_ids.tolist(), p.track_ids.tolist(),
                   mot_distances(g, p, match, threshold), frameid=int(t))
    out = mm.metrics.create().compute(acc, metrics=names, return_dataframe=False)
    return {k: (float(v) if np.isscalar(v) else v) for k, v in out.items()}


# ------------------------------------------------------------------------------- CTC
def read_ctc_folder(folder: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray]:
    """Label images (sorted by frame) and the L B E P table of a CTC GT TRA or RES folder."""
    import tifffile

    folder = Path(folder)
    names = ("man_track.txt", "res_track.txt")
    table = next((folder / n for n in names if (folder / n).exists()), None)
    if table is None:
        raise DataError.at(str(folder), "no man_track.txt or res_track.txt in this folder",
                           got=sorted(p.name for p in folder.glob("*"))[:5],
                           fix="point at a CTC '<seq>_GT/TRA' or '<seq>_RES' folder")
    tifs = sorted(p for p in folder.glob("*.tif") if p.stem.startswith(("man_track", "mask")))
    tracks = np.loadtxt(table, dtype=np.int64, ndmin=2).reshape(-1, 4)
    return [tifffile.imread(p) for p in tifs], tracks


def _nodes(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(label, frame) of every object present: two (n,) arrays."""
    labs, frames = [], []
    for t, m in enumerate(masks):
        u = np.unique(m)
        u = u[u > 0]
        labs.append(u)
        frames.append(np.full(len(u), t))
    return np.concatenate(labs).astype(np.int64), np.concatenate(frames).astype(np.int64)


def _edges(labels: np.ndarray, frames: np.ndarray, tracks: np.ndarray) -> dict[tuple, bool]:
    """{((l1, t1), (l2, t2)): is_parent_link} over track links and parent links present as nodes."""
    present = set(zip(labels.tolist(), frames.tolist()))
    edges = {((l, t), (l, t + 1)): False for l, t in present if (l, t + 1) in present}
    last = {}
    for l, t in present:
        last[l] = max(last.get(l, -1), t)
    first = {}
    for l, t in present:
        first[l] = min(first.get(l, 1 << 60), t)
    for lab, _b, _e, parent in tracks.tolist():
        if parent > 0 and parent in last and lab in first:
            edges[((parent, last[parent]), (lab, first[lab]))] = True
    return edges


def _match(gt: np.ndarray, res: np.ndarray) -> list[tuple[int, int]]:
    """(gt label, res label) pairs where the res object covers > 50% of the gt object."""
    g, r = gt.ravel().astype(np.int64), res.ravel().astype(np.int64)
    inside = g > 0
    if not inside.any():
        return []
    g_size = np.bincount(g[inside])
    pair = np.unique(np.stack([g[inside], r[inside]]), axis=1, return_counts=True)
    (gl, rl), counts = pair
    ok = (rl > 0) & (counts * 2 > g_size[gl])
    return list(zip(gl[ok].tolist(), rl[ok].tolist()))


def _table(tracks) -> np.ndarray:
    return np.zeros((0, 4), np.int64) if tracks is None else np.asarray(tracks).reshape(-1, 4)


def ctc_scores(gt, res, gt_tracks: np.ndarray | None = None,
               res_tracks: np.ndarray | None = None) -> dict[str, float]:
    """DET and TRA of a result against CTC ground truth, plus the error counts.

    ``gt``/``res``: a CTC folder, or a list of per-frame label images (then pass ``gt_tracks`` and
    ``res_tracks``, the (k, 4) L B E P tables of man_track.txt / res_track.txt).
    """
    if isinstance(gt, (str, os.PathLike)):
        gt, gt_tracks = read_ctc_folder(gt)
    if isinstance(res, (str, os.PathLike)):
        res, res_tracks = read_ctc_folder(res)
    if len(gt) != len(res):
        raise DataError.at("ctc_scores", "ground truth and result have a different number of "
                           "frames", got=(len(gt), len(res)),
                           fix="score the same frames of the same sequence")
    gt_tracks, res_tracks = _table(gt_tracks), _table(res_tracks)
    g_lab, g_fr = _nodes(gt)
    r_lab, r_fr = _nodes(res)
    to_res, n_gt_per_res = {}, {}
    for t, (gm, rm) in enumerate(zip(gt, res)):
        if gm.shape != rm.shape:
            raise DataError.at(f"ctc_scores frame {t}", "result and GT masks differ in shape",
                               got=(rm.shape, gm.shape), fix="write result masks at the GT size")
        for gl, rl in _match(gm, rm):
            to_res[(gl, t)] = (rl, t)
            n_gt_per_res[(rl, t)] = n_gt_per_res.get((rl, t), 0) + 1
    n_gt = len(g_lab)
    fn = n_gt - len(to_res)
    fp = len(r_lab) - len(n_gt_per_res)
    ns = sum(k - 1 for k in n_gt_per_res.values())
    g_edges, r_edges = _edges(g_lab, g_fr, gt_tracks), _edges(r_lab, r_fr, res_tracks)
    ea = ec = 0
    covered = set()
    for (a, b), parent in g_edges.items():
        ra, rb = to_res.get(a), to_res.get(b)
        if ra is None or rb is None or (ra, rb) not in r_edges:
            ea += 1
            continue
        covered.add((ra, rb))
        ec += int(r_edges[(ra, rb)] != parent)
    ed = sum(1 for e in r_edges if e not in covered)
    aogm_d = 5 * ns + 10 * fn + 1 * fp
    aogm = aogm_d + 1 * ed + 1.5 * ea + 1 * ec
    d0, t0 = 10.0 * n_gt, 10.0 * n_gt + 1.5 * len(g_edges)
    return {"DET": 1 - min(aogm_d, d0) / d0 if d0 else float("nan"),
            "TRA": 1 - min(aogm, t0) / t0 if t0 else float("nan"),
            "AOGM_D": float(aogm_d), "AOGM": float(aogm), "NS": ns, "FN": fn, "FP": fp,
            "ED": ed, "EA": ea, "EC": ec}
