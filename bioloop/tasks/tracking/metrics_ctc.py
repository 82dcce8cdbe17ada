"""Cell Tracking Challenge scores: DET, TRA, LNK (AOGM) and the biological measures CT, TF, BC(i), CCA, BIO(i).

Definitions follow Matula et al. 2015 (AOGM) and Ulman et al. 2017 (biological measures) as the
CTC evaluation software and py-ctcmetrics compute them:

- A result object matches a reference (GT) object when it covers more than half of it; a result
  object matching k > 1 GT objects costs k - 1 splits (NS), a GT object with no match is a FN, a
  result object with none is a FP. AOGM-D = 5 NS + 10 FN + 1 FP.
- Edges are track links (a label in frames t and t+1) and parent links (a parent's last frame to
  its child's first). The result graph is first reduced to the objects that match exactly one GT
  object; its remaining edges that are not GT edges are ED, GT edges it lacks are EA, and shared
  edges of the other kind (track vs parent link) are EC. AOGM = AOGM-D + 1 ED + 1.5 EA + 1 EC.
- DET = 1 - min(AOGM-D, 10 V) / 10 V and TRA = 1 - min(AOGM, 10 V + 1.5 E) / (10 V + 1.5 E) for
  V GT objects and E GT edges; LNK = 1 - min(AOGM-A, 1.5 E) / 1.5 E with AOGM-A = ED + 1.5 EA + EC.
- CT: 2 x (GT tracks followed by one result track over exactly its frames) / (GT + result tracks).
  TF: mean over detected GT tracks of the longest uninterrupted fraction one result track covers
  (the CTC tie rule kept: for each result track in label order, a GT track stops looking once it
  is fully covered). BC(i): F1 of divisions found within i frames (parents matched at their last
  common frame, every daughter at its first). CCA: 1 - the largest gap between the cumulative
  histograms of complete cell-cycle lengths (tracks that both start and end with a division).
  BIO(i): mean of those of CT, TF, BC(i), CCA that are defined. BC(i) is None without GT divisions,
  CCA None without a complete GT cell cycle.

Not computed here: SEG and OP_CSB/OP_CTB (they need the SEG ground truth), OP_CLB, CHOTA and the
py-ctcmetrics variants of MOTA/HOTA/IDF1 (bioloop reports motmetrics' MOTA/IDF1 and TrackEval's HOTA).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioloop.errors import DataError

__all__ = ["CTC_MEASURES", "ctc_scores", "frame_matches", "overlap_counts", "read_ctc_folder"]

BC_LEVELS = (0, 1, 2, 3)
CTC_MEASURES = ("DET", "TRA", "LNK", "CT", "TF", *(f"BC({i})" for i in BC_LEVELS), "CCA",
                *(f"BIO({i})" for i in BC_LEVELS))


def read_ctc_folder(folder, pattern: str | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Label images (sorted by frame) and the L B E P table of a CTC GT TRA or RES folder.

    ``pattern``: the mask file names when they are not ``man_trackTTT.tif`` / ``maskTTT.tif``
    (see ``io_ctc.mask_files``)."""
    import tifffile

    from bioloop.tasks.tracking.io_ctc import mask_files, read_ctc_tracks

    folder = Path(folder)
    names = ("man_track.txt", "res_track.txt")
    table = next((folder / n for n in names if (folder / n).exists()), None)
    if table is None:
        raise DataError.at(str(folder), "no man_track.txt or res_track.txt in this folder",
                           got=sorted(p.name for p in folder.glob("*"))[:5],
                           fix="point at a CTC '<seq>_GT/TRA' or '<seq>_RES' folder")
    prefix = "man_track" if table.name == "man_track.txt" else "mask"
    files = mask_files(str(folder), prefix, pattern)
    n = max(files) + 1
    if sorted(files) != list(range(n)):
        raise DataError.at(str(folder), "mask files are missing for some frames",
                           got=sorted(set(range(n)) - set(files))[:10], fix="write one mask per frame")
    return [np.asarray(tifffile.imread(files[t])) for t in range(n)], read_ctc_tracks(table)


def _table(tracks) -> np.ndarray:
    return np.zeros((0, 4), np.int64) if tracks is None else np.asarray(tracks, np.int64).reshape(-1, 4)


def overlap_counts(gt: np.ndarray, res: np.ndarray):
    """(GT label, result label, shared pixels) of every overlapping pair of objects, ordered by GT
    then result label; with the pixel count of every GT and result label (``bincount`` arrays)."""
    g, r = np.asarray(gt).ravel().astype(np.int64), np.asarray(res).ravel().astype(np.int64)
    if g.size and (g.min() < 0 or r.min() < 0):
        raise DataError.at("ctc_scores", "label images have negative labels", got=int(min(g.min(), r.min())),
                           fix="write labels >= 0 (0 is background)")
    g_size = np.bincount(g) if g.size else np.zeros(1, np.int64)
    r_size = np.bincount(r) if r.size else np.zeros(1, np.int64)
    both = (g > 0) & (r > 0)
    keys, counts = np.unique(g[both] * len(r_size) + r[both], return_counts=True)
    return keys // len(r_size), keys % len(r_size), counts, g_size, r_size


def frame_matches(gt: np.ndarray, res: np.ndarray):
    """(GT labels, result labels, matched GT labels, their result labels) of one frame.

    A pair matches when the result object covers more than half of the GT object; the matched
    arrays are ordered by GT label."""
    gl, rl, counts, g_size, r_size = overlap_counts(gt, res)
    g_labels, r_labels = np.flatnonzero(g_size), np.flatnonzero(r_size)
    g_labels, r_labels = g_labels[g_labels > 0], r_labels[r_labels > 0]
    ok = counts * 2 > g_size[gl]
    return g_labels, r_labels, gl[ok], rl[ok]


def _edges(labels: list[np.ndarray], tracks: np.ndarray) -> dict[tuple, int]:
    """{((label, t), (label', t')): 0 for a track link, 1 for a parent link}."""
    edges = {}
    for t in range(len(labels) - 1):
        for lab in np.intersect1d(labels[t], labels[t + 1]).tolist():
            edges[((lab, t), (lab, t + 1))] = 0
    rows = {int(r[0]): r for r in tracks.tolist()}
    for lab, b, _e, parent in tracks.tolist():
        if parent > 0 and parent in rows:
            edges[((parent, rows[parent][2]), (lab, b))] = 1
    return edges


def _aogm(g_labels, r_labels, matches, gt_tracks, res_tracks) -> dict:
    n_v = sum(len(x) for x in g_labels)
    matched = sum(len(m[0]) for m in matches)
    n_res = sum(len(x) for x in r_labels)
    res_to_gt, ns, fp_matched = {}, 0, 0
    for t, (mg, mr) in enumerate(matches):
        labs, counts = np.unique(mr, return_counts=True)
        ns += int((counts - 1).sum())
        fp_matched += len(labs)
        single = set(labs[counts == 1].tolist())
        for gl, rl in zip(mg.tolist(), mr.tolist()):
            if rl in single:
                res_to_gt[(rl, t)] = (gl, t)
    fn, fp = n_v - matched, n_res - fp_matched
    g_edges = _edges(g_labels, gt_tracks)
    r_edges = _edges(r_labels, res_tracks)
    ed = ec = 0
    hit = set()
    for (a, b), kind in r_edges.items():
        ga, gb = res_to_gt.get(a), res_to_gt.get(b)
        if ga is None or gb is None:
            continue  # the result graph is reduced to uniquely matched objects first
        if (ga, gb) in g_edges:
            hit.add((ga, gb))
            ec += int(g_edges[(ga, gb)] != kind)
        else:
            ed += 1
    ea = len(g_edges) - len(hit)
    return {"NS": ns, "FN": fn, "FP": fp, "ED": ed, "EA": ea, "EC": ec, "num_vertices": n_v,
            "num_edges": len(g_edges)}


def _ratio(cost: float, zero: float) -> float:
    return 1 - min(cost, zero) / zero if zero else float("nan")


def _assignments(g_labels, matches, n: int) -> dict[int, np.ndarray]:
    """GT label -> per-frame result label (0: unmatched or matched to a split object; NaN: absent)."""
    out: dict[int, np.ndarray] = {}
    for t, (labs, (mg, mr)) in enumerate(zip(g_labels, matches)):
        to = dict(zip(mg.tolist(), mr.tolist()))
        counts = dict(zip(*np.unique(mr, return_counts=True))) if len(mr) else {}
        for lab in labs.tolist():
            row = out.setdefault(lab, np.full(n, np.nan))
            m = to.get(lab, 0)
            row[t] = m if m and counts[m] == 1 else 0
    return out


def _row(tracks: np.ndarray, label) -> np.ndarray:
    rows = tracks[tracks[:, 0] == label]
    if not len(rows):
        raise DataError.at("ctc_scores", f"label {int(label)} is in the masks but not in the track table",
                           fix="run `bioloop ctc-fix` on the folder")
    return rows[0]


def _ct(assign, gt_tracks, res_tracks) -> float:
    correct = 0
    for lab, v in assign.items():
        got = np.unique(v[~np.isnan(v)])
        if len(got) != 1 or got[0] == 0:
            continue
        g, r = _row(gt_tracks, lab), _row(res_tracks, got[0])
        correct += int(g[1] == r[1] and g[2] == r[2])
    total = len(gt_tracks) + len(res_tracks)
    return 2 * correct / total if total else float("nan")


def _tf(assign, gt_tracks) -> float:
    fractions: dict[float, dict[int, float]] = {}
    for lab, v in assign.items():
        _, b, e, _ = _row(gt_tracks, lab)
        part = v[b:e + 1]
        if (np.unique(part) == 0).all():
            continue
        run, last = 0, 0
        for i in part:
            if last != i or i == 0:
                run = 0
            if i > 0:
                run += 1
                best = fractions.setdefault(i, {})
                best[lab] = max(best.get(lab, 0), run / (e - b + 1))
            last = i
    tfs = {int(k): 0.0 for k in gt_tracks[:, 0]}
    for _, per_gt in sorted(fractions.items()):
        for lab, frac in sorted(per_gt.items()):
            if tfs[lab] == 1:
                continue
            tfs[lab] = max(tfs[lab], frac)
            if frac == 1:
                break  # the CTC software's tie rule (kept for identical numbers)
    found = [x for x in tfs.values() if x > 0]
    return float(np.mean(found)) if found else 0.0


def _dividing(tracks: np.ndarray) -> np.ndarray:
    parents, counts = np.unique(tracks[:, 3], return_counts=True)
    return parents[(parents > 0) & (counts > 1)]


def _division_matches(gt_tracks, res_tracks, mapped, i: int) -> tuple[int, int, int]:
    """(TP, FP, FN) of divisions within ``i`` frames; ``mapped[t]`` = (GT labels, result labels)."""
    g_div, r_div = _dividing(gt_tracks), _dividing(res_tracks)
    if not len(g_div) or not len(r_div):
        return 0, len(r_div) if not len(g_div) else 0, len(g_div) if not len(r_div) else 0
    g_end = np.array([_row(gt_tracks, p)[2] for p in g_div])
    tp = 0
    for rp in r_div.tolist():
        r_end = _row(res_tracks, rp)[2]
        r_kids = [(int(k), int(_row(res_tracks, k)[1])) for k in res_tracks[res_tracks[:, 3] == rp, 0]]
        for gp, g_e in zip(g_div[np.abs(g_end - r_end) <= i].tolist(), g_end[np.abs(g_end - r_end) <= i]):
            g_kids = [(int(k), int(_row(gt_tracks, k)[1])) for k in gt_tracks[gt_tracks[:, 3] == gp, 0]]
            tp += int(_division_found(gp, rp, int(g_e), int(r_end), g_kids, r_kids, mapped, i))
    return tp, len(r_div) - tp, len(g_div) - tp


def _division_found(gp, rp, g_end, r_end, g_kids, r_kids, mapped, i) -> bool:
    if len(g_kids) != len(r_kids):
        return False
    mg, mr = mapped[min(g_end, r_end)]
    if mg.count(gp) != 1 or mr[mg.index(gp)] != rp or mr.count(rp) != 1:
        return False
    found = set()
    for gk, g_start in g_kids:
        for rk, r_start in r_kids:
            if abs(g_start - r_start) > i:
                continue
            mg, mr = mapped[max(g_start, r_start)]
            if mr.count(rk) != 1 or gk not in mg:
                continue
            if mr[mg.index(gk)] == rk:
                found.add(rk)
                break
    return len(found) == len(g_kids)


def _f1(tp: int, fp: int, fn: int) -> float | None:
    if tp + fn == 0:
        return None
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return 2 * precision * recall / max(precision + recall, 1e-4)


def _cycle_lengths(tracks: np.ndarray) -> np.ndarray:
    div = _dividing(tracks)
    full = np.isin(tracks[:, 0], div) & np.isin(tracks[:, 3], div)
    return (tracks[full, 2] - tracks[full, 1]).astype(np.int64)


def _cca(gt_tracks, res_tracks) -> float | None:
    g, r = _cycle_lengths(gt_tracks), _cycle_lengths(res_tracks)
    if not len(g):
        return None
    if not len(r):
        return 0.0
    size = int(max(g.max(), r.max())) + 1
    cg = np.cumsum(np.bincount(g, minlength=size) / len(g))
    cr = np.cumsum(np.bincount(r, minlength=size) / len(r))
    return float(1 - np.max(np.abs(cg - cr)))


def ctc_scores(gt, res, gt_tracks: np.ndarray | None = None, res_tracks: np.ndarray | None = None,
               *, pattern: str | None = None) -> dict[str, float | int | None]:
    """DET, TRA, LNK, CT, TF, BC(0..3), CCA, BIO(0..3) of a result against CTC ground truth, with
    the AOGM error counts (NS, FN, FP, ED, EA, EC) and their weighted sums.

    ``gt``/``res``: a CTC folder (``pattern``: mask file names other than the CTC ones), or a list
    of per-frame label images (then pass ``gt_tracks`` and ``res_tracks``, the (k, 4) L B E P
    tables of man_track.txt / res_track.txt). Inputs must be valid CTC data (``io_ctc.check_ctc``).
    """
    if isinstance(gt, (str, os.PathLike)):
        gt, gt_tracks = read_ctc_folder(gt, pattern)
    if isinstance(res, (str, os.PathLike)):
        res, res_tracks = read_ctc_folder(res, pattern)
    if len(gt) != len(res):
        raise DataError.at("ctc_scores", "ground truth and result have a different number of frames",
                           got=(len(gt), len(res)), fix="score the same frames of the same sequence")
    gt_tracks, res_tracks = _table(gt_tracks), _table(res_tracks)
    g_labels, r_labels, matches = [], [], []
    for t, (gm, rm) in enumerate(zip(gt, res)):
        if np.shape(gm) != np.shape(rm):
            raise DataError.at(f"ctc_scores frame {t}", "result and GT masks differ in shape",
                               got=(np.shape(rm), np.shape(gm)), fix="write result masks at the GT size")
        gl, rl, mg, mr = frame_matches(gm, rm)
        g_labels.append(gl), r_labels.append(rl), matches.append((mg, mr))
    ops = _aogm(g_labels, r_labels, matches, gt_tracks, res_tracks)
    aogm_d = 5 * ops["NS"] + 10 * ops["FN"] + 1 * ops["FP"]
    aogm_a = 1 * ops["ED"] + 1.5 * ops["EA"] + 1 * ops["EC"]
    v, e = ops["num_vertices"], ops["num_edges"]
    out: dict[str, float | int | None] = {
        "DET": _ratio(aogm_d, 10.0 * v), "TRA": _ratio(aogm_d + aogm_a, 10.0 * v + 1.5 * e),
        "LNK": _ratio(aogm_a, 1.5 * e)}
    assign = _assignments(g_labels, matches, len(gt))
    out["CT"] = _ct(assign, gt_tracks, res_tracks)
    out["TF"] = _tf(assign, gt_tracks)
    mapped = [(mg.tolist(), mr.tolist()) for mg, mr in matches]
    for i in BC_LEVELS:
        out[f"BC({i})"] = _f1(*_division_matches(gt_tracks, res_tracks, mapped, i))
    out["CCA"] = _cca(gt_tracks, res_tracks)
    for i in BC_LEVELS:
        parts = [x for x in (out["CT"], out["TF"], out[f"BC({i})"], out["CCA"]) if x is not None]
        out[f"BIO({i})"] = float(np.mean(parts)) if parts else None
    out.update({"AOGM_D": float(aogm_d), "AOGM": float(aogm_d + aogm_a), **{k: int(ops[k]) for k in
                ("NS", "FN", "FP", "ED", "EA", "EC")}})
    return out


def sum_counts(rows: Sequence[dict]) -> dict:
    """Summed error counts of several sequences (the CTC reports each sequence on its own)."""
    return {k: sum(r[k] for r in rows) for k in ("NS", "FN", "FP", "ED", "EA", "EC")}
