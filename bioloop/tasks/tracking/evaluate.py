"""``bioloop evaluate`` for tracking: motmetrics, TrackEval's HOTA and, for CTC folders, the CTC measures.

``prediction`` and ``truth`` are one path each or lists of the same length, paired in order. A path
is a .slp (one sequence per video), a MOT txt, a TrackMate CSV, a CTC label folder or dataset root
(every ``NN_RES`` / ``NN_GT/TRA`` sequence, paired by number), or a folder of MOT txt files (paired
by name with ``<truth>/<name>.txt`` or the MOTChallenge layout ``<truth>/<name>/gt/gt.txt``).

Every sequence gets a column and, with several, an OVERALL column: motmetrics'
``compute_many(..., generate_overall=True)``, TrackEval's ``combine_sequences`` for HOTA, and the
mean over sequences for the CTC measures (which the CTC reports per sequence).

Matching, never by id: box IoU (``match="iou"``, threshold 0.5), centroid distance in pixels
(``match="centroid"`` needs ``match_threshold``), or, for CTC folders, masks (``match="mask"``: a
result object matches a GT object it covers more than half of, the CTC rule; MOTP is then 1 - mask
IoU). DET/TRA and the other CTC measures always use the masks; by default MOTA/IDF1/HOTA on CTC
folders use the masks' bounding boxes. HOTA needs a similarity and is left out with centroids.
CTC folders are checked with ``check_ctc`` first (``bioloop ctc-fix`` repairs relabelling problems).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from bioloop.errors import ConfigError, DataError, format_message
from bioloop.tasks.tracking.types import TrackSequence

__all__ = ["evaluate_tracking", "format_table", "sequence_pairs"]

NOT_COMPUTED = ("not computed: SEG, OP_CSB, OP_CTB (they need SEG ground truth), OP_CLB, CHOTA; MOTA/IDF1 are "
                "motmetrics', HOTA TrackEval's")


def _paths(value) -> list[str]:
    if value is None:
        return []
    return [os.fspath(v) for v in ([value] if isinstance(value, (str, os.PathLike)) else value)]


def _is_ctc(path: str) -> bool:
    from bioloop.tasks.tracking.ctc_tools import ctc_sequences

    p = Path(path)
    return p.is_dir() and bool(ctc_sequences(p, gt=True) or ctc_sequences(p, gt=False) or
                               any(p.glob("*.tif")) or any(p.glob("*_GT")) or any(p.glob("*_RES")))


def _mot_folder(pred: str, truth: str) -> list[tuple[str, str, str]]:
    files = sorted(Path(pred).glob("*.txt"))
    if not files:
        raise DataError.at(pred, "no CTC sequences and no MOT .txt files in this folder",
                           fix="pass a CTC dataset root, NN_RES folder, or a folder of <sequence>.txt results")
    out, missing = [], []
    for f in files:
        cands = [Path(truth) / f.name, Path(truth) / f.stem / "gt" / "gt.txt"]
        hit = next((c for c in cands if c.is_file()), None)
        (out.append((f.stem, str(f), str(hit))) if hit else missing.append(f.name))
    if missing:
        raise DataError.at(truth, f"no ground truth for {len(missing)} result(s)", got=missing[:5],
                           fix="expect <truth>/<name>.txt or <truth>/<name>/gt/gt.txt for each <name>.txt")
    scored = {name for name, _, _ in out}
    truths = [c.stem for c in Path(truth).glob("*.txt")]
    truths += [c.parent.parent.name for c in Path(truth).glob("*/gt/gt.txt")]
    unscored = sorted(set(truths) - scored)
    if unscored:
        print(f"{truth}: ground-truth sequence(s) {unscored} have no result and are not scored")
    return out


def _ctc_pairs(pred: str, truth: str, pattern: str | None) -> list[tuple[str, str, str]]:
    from bioloop.tasks.tracking.ctc_tools import ctc_sequences
    from bioloop.tasks.tracking.io_ctc import check_ctc

    p_seqs, g_seqs = ctc_sequences(pred, gt=False), ctc_sequences(truth, gt=True)
    if not p_seqs:
        p_seqs = ctc_sequences(pred, gt=True)  # a GT folder scored as a result (e.g. GT against itself)
    if not p_seqs or not g_seqs:
        where, what = (pred, "result") if not p_seqs else (truth, "ground-truth")
        raise DataError.at(where, f"no CTC {what} sequence found (no res_track.txt / man_track.txt)",
                           fix="pass a label folder (NN_RES, NN_GT/TRA) or the dataset root holding them")
    if len(p_seqs) == 1 and len(g_seqs) == 1:
        pairs = [(g_seqs[0][0], p_seqs[0][1], g_seqs[0][1])]
    else:
        g_by = dict(g_seqs)
        lonely = [n for n, _ in p_seqs if n not in g_by]
        if lonely:
            raise DataError.at(truth, f"no ground truth for result sequence(s) {lonely}", got=sorted(g_by),
                               fix="score results of the sequences the ground truth has")
        pairs = [(n, f, g_by[n]) for n, f in p_seqs]
        unscored = sorted(set(g_by) - {n for n, _ in p_seqs})
        if unscored:
            print(f"{truth}: ground-truth sequence(s) {unscored} have no result and are not scored")
    messages = []
    for folder in dict.fromkeys(f for _, r, g in pairs for f in (g, r)):
        problems = check_ctc(folder, pattern)
        if problems:
            messages.append(format_message(folder, "invalid Cell Tracking Challenge data (the CTC tools reject "
                                           "it):\n  - " + "\n  - ".join(problems),
                                           fix=f"relabel it with `bioloop ctc-fix {folder} FIXED_FOLDER` (a new "
                                               "label per gap-separated segment, parent = previous segment)"))
    if messages:
        raise DataError("\n".join(messages))
    return pairs


def sequence_pairs(prediction, truth, video=None, mask_pattern=None) -> list[dict]:
    """[{name, pred: TrackSequence, gt: TrackSequence, ctc: (pred folder, gt folder) | None}]."""
    from bioloop.tasks.tracking.io_ctc import read_ctc
    from bioloop.tasks.tracking.predict import read_input

    preds, truths = _paths(prediction), _paths(truth)
    if not truths:
        raise ConfigError.at("evaluate", "needs the ground truth",
                             fix="pass --truth (a .slp, CTC folder, MOT txt or TrackMate CSV)")
    if len(preds) != len(truths):
        raise ConfigError.at("evaluate", f"{len(preds)} predictions for {len(truths)} ground truths",
                             got=preds, fix="give one --truth per --prediction, in the same order")
    out = []
    for pred, gt in zip(preds, truths):
        for path in (pred, gt):
            if not os.path.exists(path):
                raise DataError.at(path, "not found", fix="check the path")
        if os.path.isdir(pred) and not _is_ctc(pred):
            for name, p, g in _mot_folder(pred, gt):
                out.append({"name": name, "pred": read_input(p)[0][0], "gt": read_input(g, video)[0][0], "ctc": None})
            continue
        if os.path.isdir(pred) or os.path.isdir(gt):
            if not (os.path.isdir(pred) and os.path.isdir(gt)):
                raise DataError.at(pred if not os.path.isdir(pred) else gt, "a CTC folder is scored against a "
                                   "CTC folder", fix="pass CTC folders for both --prediction and --truth")
            for name, p, g in _ctc_pairs(pred, gt, mask_pattern):
                out.append({"name": name, "pred": read_ctc(p, gt=False, pattern=mask_pattern)[0],
                            "gt": read_ctc(g, gt=True, pattern=mask_pattern)[0], "ctc": (p, g)})
            continue
        p_seqs, g_seqs = read_input(pred)[0], read_input(gt, video)[0]
        if len(p_seqs) != len(g_seqs):
            raise DataError.at(pred, f"has {len(p_seqs)} sequences but the truth has {len(g_seqs)}",
                               fix="score a prediction of the same videos")
        for k, (p, g) in enumerate(zip(p_seqs, g_seqs)):
            name = g.name if len(g_seqs) == 1 else f"{g.name or Path(gt).stem}[{k}]"
            out.append({"name": name, "pred": p, "gt": g, "ctc": None})
    names = [o["name"] for o in out]
    for o in out:  # names must be unique columns
        if names.count(o["name"]) > 1:
            o["name"] = f"{o['name']} ({Path(o['pred'].source).name or o['pred'].source})"
    return out


class _MaskOverlap:
    """Per frame of a CTC pair: GT x result matrices of mask IoU and of the CTC match (> half the GT)."""

    def __init__(self, gt: TrackSequence, pred: TrackSequence):
        self.gt, self.pred, self.cache = gt, pred, {}

    def __call__(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        if frame not in self.cache:
            from bioloop.tasks.tracking.metrics_ctc import overlap_counts

            g_ids = self.gt.frames[frame].mask_ids
            p_ids = self.pred.frames[frame].mask_ids
            gl, rl, counts, g_count, r_count = overlap_counts(self.gt.read_labels(frame), self.pred.read_labels(frame))
            gi = {int(v): i for i, v in enumerate(g_ids)}
            pi = {int(v): i for i, v in enumerate(p_ids)}
            inter = np.zeros((len(g_ids), len(p_ids)))
            for a, b, c in zip(gl.tolist(), rl.tolist(), counts.tolist()):
                inter[gi[a], pi[b]] = c
            g_size = g_count[np.asarray(g_ids, np.int64)].astype(float)
            p_size = r_count[np.asarray(p_ids, np.int64)].astype(float)
            iou = inter / np.maximum(g_size[:, None] + p_size[None, :] - inter, 1)
            self.cache[frame] = (iou, inter * 2 > g_size[:, None])
        return self.cache[frame]


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and not float(value).is_integer():
        return f"{value:.4f}"
    return str(int(value))


def format_table(metrics: dict[str, Any] | dict[str, dict[str, Any]], labels: dict[str, str] | None = None,
                 notes=()) -> str:
    """One column per sequence (``{sequence: {metric: value}}``) or a metric/value table."""
    if metrics and not all(isinstance(v, dict) for v in metrics.values()):
        metrics = {"value": metrics}
    cols = list(metrics)
    rows = list(dict.fromkeys(k for c in cols for k in metrics[c]))
    labels = labels or {}
    names = [labels.get(r, r) for r in rows]
    width = max([len(n) for n in names] + [6])
    widths = [max(len(c), 9) for c in cols]
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
    for r, n in zip(rows, names):
        lines.append(f"{n:<{width}}  " + "  ".join(f"{_fmt(metrics[c].get(r)):>{w}}" for c, w in zip(cols, widths)))
    return "\n".join([*lines, *notes])


def evaluate_tracking(cfg, *, prediction, truth=None, report=None, match: str | None = None,
                      match_threshold: float | None = None, video=None, untracked: str = "count",
                      mask_pattern: str | None = None, show_progress: bool = False,
                      **_options) -> dict[str, Any]:
    """``{"metrics": {...} (the OVERALL column, or the only sequence's), "sequences": {name: {...}},
    "table": str, "notes": [...]}``; ``report``: also write them as JSON."""
    from tqdm.auto import tqdm

    from bioloop.engine.progress import progress_enabled
    from bioloop.tasks.tracking.metrics import accumulate, compute_many, untracked_count, with_untracked
    from bioloop.tasks.tracking.metrics_ctc import CTC_MEASURES, ctc_scores
    from bioloop.tasks.tracking.metrics_hota import hota, hota_combine, hota_summary

    match = match or "iou"
    pairs = sequence_pairs(prediction, truth, video, mask_pattern)
    if match == "mask" and any(p["ctc"] is None for p in pairs):
        raise ConfigError.at("evaluate --match", "mask matching needs CTC folders (label images) on both sides",
                             got=match, fix="use --match iou or centroid for .slp / MOT / TrackMate files")
    where = f"{cfg.source.name if cfg.source else 'config'}: runner.metrics.test"
    names = list(cfg.runner.metrics.test or ["num_switches", "mota", "idf1"])
    notes = []
    for p in pairs:
        lost = untracked_count(p["gt"].frames)
        if lost:
            raise DataError.at(p["gt"].source or p["name"], f"{lost} ground-truth instance(s) have no track",
                               got=lost, fix="give every true instance a track (proofread the labels) before "
                                             "scoring identities")
        n = untracked_count(p["pred"].frames)
        if n:
            notes.append(f"{p['name']}: {n} untracked predicted instance(s) " +
                         ("counted as one-frame tracks" if untracked == "count" else "excluded (--untracked exclude)"))
    accs, hota_parts, ctc_rows = [], [], []
    quiet = not show_progress or len(pairs) < 2
    bar = tqdm(pairs, desc="scoring", unit="sequence", disable=not progress_enabled(quiet))
    for p in bar:
        gt, pred = p["gt"].frames, with_untracked(p["pred"].frames, untracked, "evaluate")
        if match == "mask":
            overlap = _MaskOverlap(p["gt"], p["pred"])
            accs.append(accumulate(gt, pred, distance_fn=_mask_distances(overlap), where=where))
            similarity = (lambda g, _p, o=overlap: o(g.frame)[0])
        else:
            accs.append(accumulate(gt, pred, match, match_threshold, where=where))
            similarity = None
        if match != "centroid":
            hota_parts.append(hota(gt, pred, similarity))
        if p["ctc"] is not None:
            ctc_rows.append(ctc_scores(p["ctc"][1], p["ctc"][0], pattern=mask_pattern))
    rows = compute_many(accs, [p["name"] for p in pairs], names, where)
    if hota_parts:
        for p, part in zip(pairs, hota_parts):
            rows[p["name"]].update(hota_summary(part))
        rows["OVERALL"].update(hota_summary(hota_combine(hota_parts)))
    else:
        notes.append("HOTA/DetA/AssA need a similarity in [0, 1]: not computed with --match centroid")
    for p, scores in zip([p for p in pairs if p["ctc"] is not None], ctc_rows):
        rows[p["name"]].update({k: scores[k] for k in CTC_MEASURES})
    if ctc_rows:
        for k in CTC_MEASURES:
            vals = [r[k] for r in ctc_rows if r[k] is not None and not math.isnan(r[k])]
            rows["OVERALL"][k] = float(np.mean(vals)) if vals else None
        notes.append(NOT_COMPUTED)
        if match != "mask":
            notes.append("MOTA/IDF1/HOTA matched by box IoU of the masks' bounding boxes; DET/TRA and the CTC "
                         "measures by mask overlap (--match mask matches all of them by masks)")
        if len(pairs) > 1:
            notes.append("CTC measures in OVERALL: the mean over sequences")
    label = {"iou": "motp (1 - IoU)", "mask": "motp (1 - mask IoU)", "centroid": "motp (px)"}[match]
    labels = {"motp": label}
    table_rows = rows if len(pairs) > 1 else {pairs[0]["name"] or "value": rows[pairs[0]["name"]]}
    metrics = rows["OVERALL"] if len(pairs) > 1 else rows[pairs[0]["name"]]
    result = {"metrics": metrics, "sequences": {p["name"]: rows[p["name"]] for p in pairs},
              "table": format_table(table_rows, labels, notes), "notes": notes,
              "prediction": [str(x) for x in _paths(prediction)], "truth": [str(x) for x in _paths(truth)],
              "match": match, "untracked": untracked}
    if "motp" in names:
        result["motp_convention"] = label[len("motp "):].strip("()")
    if report:
        path = Path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_plain({k: v for k, v in result.items() if k != "table"}), indent=2))
    return result


def _plain(value):
    """JSON-ready: NaN -> null, numpy scalars -> float."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _mask_distances(overlap):
    def distances(g, p):
        if not len(g) or not len(p):
            return np.zeros((len(g), len(p)))
        iou, ok = overlap(g.frame)
        return np.where(ok, 1.0 - iou, np.nan)

    return distances
