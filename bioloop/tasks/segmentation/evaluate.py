"""Score predictions against ground-truth crops: semantic scores for every class, instance scores
for classes with instance labels.

A float prediction (probabilities from ``bioloop predict``) is resampled to the truth's voxel
grid with linear interpolation and thresholded. An integer prediction (``bioloop process``
labels) is resampled with nearest neighbour; its semantic mask is ``label > 0``. A class is
scored as instances when ``kind="instance"``, or with ``kind="auto"`` when its prediction is
integer and any crop holds more than one object id, the image says ``kind: instance``
(written by process) or the class is in ``cfg.process.instance_classes``.

Instance classes also get the connectomics scores: variation of information (split, merge) and
adapted Rand error with its precision and recall (as scikit-image computes them).

Counts are pooled over crops (voxels for semantic scores, objects and matched IoUs for
instance scores, contingency sums for VOI and adapted Rand, see instance_metrics.py) and turned
into scores once.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bioloop.data.ngff import Volume, open_volume
from bioloop.data.sources import open_native
from bioloop.tasks.segmentation.probabilities import decoded
from bioloop.data.tif import is_tif
from bioloop.engine.progress import progress_enabled
from bioloop.errors import DataError
from bioloop.tasks.segmentation.instance_metrics import (instance_counts, pool_instance_counts,
                                                         pool_segmentation_counts, scores_from_instance_counts,
                                                         scores_from_segmentation_counts, segmentation_counts,
                                                         semantic_counts, semantic_scores)

KINDS = ("auto", "semantic", "instance")
_INSTANCE_KEYS = {"precision": "instance_precision", "recall": "instance_recall"}
_INSTANCE_COLUMNS = [("F1", "f1"), ("PQ", "pq"), ("SQ", "sq"), ("precision", "instance_precision"),
                     ("recall", "instance_recall"), ("NHD", "normalized_hausdorff"), ("VOI split", "voi_split"),
                     ("VOI merge", "voi_merge"), ("ARAND", "arand_error")]
_SEGMENTATION_KEYS = ("voi_split", "voi_merge", "voi", "arand_error", "arand_precision", "arand_recall")


def evaluate(cfg, *, prediction: str, truth: str | None = None, kind: str = "auto", threshold: float | None = None,
             iou_threshold: float = 0.5, report: str | None = None, crops: str | None = None,
             figure: str | None = None, raw: str | None = None, show_progress: bool = True) -> dict:
    """Score ``prediction`` against the crop group ``truth`` (or every validate crop of the datasplit ``crops``).

    ``figure`` writes a PNG of one z-slice of the first crop: raw (``raw``, else the image predict recorded),
    truth and prediction per class, side by side."""
    if kind not in KINDS:
        raise DataError.at("evaluate", "unknown kind", got=kind, fix=f"use one of {KINDS}")
    threshold = float(cfg.threshold if threshold is None else threshold)
    options = getattr(cfg, "storage_options", None) or None
    classes = list(cfg.classes)
    items = _items(prediction, truth, crops, classes)
    rows, semantic, instance, connectomics, auto_instance, panels = [], {}, {}, {}, set(), []
    bar = tqdm(total=len(items) * len(classes), desc="evaluate", unit="class",
               disable=not progress_enabled(not show_progress))
    for crop, truth_group, pred_group, crop_classes in items:
        image = _truth_image(cfg, truth_group, options)
        for name in classes:
            bar.update(1)
            if name not in crop_classes:
                continue
            found = _truth_of_class(cfg, image, truth_group, name, options)
            if found is None:  # this crop does not annotate the class
                print(f"{truth_group}: no truth image for class '{name}' (looked for {truth_group}/{name}); "
                      "not scored in this crop", file=sys.stderr, flush=True)
                continue
            gt, truth_values = found
            row = _score(cfg, gt, truth_values, f"{pred_group}/{name}", name, kind, threshold, iou_threshold, options)
            shown = row.pop("_shown")
            if figure and (not panels or panels[0]["crop"] == crop):
                panels.append({"crop": crop, "name": name, "gt": gt, "truth": truth_values, "prediction": shown,
                               "path": f"{pred_group}/{name}"})
            if row.pop("_auto_instance"):
                auto_instance.add(name)
            counts = row.pop("_instance_counts")
            if counts is not None:
                instance.setdefault(name, []).append(counts)
                connectomics.setdefault(name, []).append(row.pop("_segmentation_counts"))
            part = semantic.setdefault(name, [0, 0, 0])
            for i, key in enumerate(("tp_voxels", "fp_voxels", "fn_voxels")):
                part[i] += row[key]
            rows.append({"crop": crop, **row})
    bar.close()
    if not rows:
        where = crops if crops else str(truth)
        raise DataError.at(str(where), f"no ground truth for any of the classes {classes}",
                           fix="point --truth at a crop group holding one array group per class, or at one label "
                               "image (tif, zarr array, OME-NGFF image) with the config's label_layout")
    scored = [c for c in classes if c in semantic]
    kinds = {c: "instance" if c in instance and (kind == "instance" or c in auto_instance) else "semantic"
             for c in scored}
    for row in rows:  # instance columns only for classes scored as instances
        if kinds[row["class"]] != "instance":
            for key in [k for k in row if k in _instance_row_keys()]:
                del row[key]
        row["kind"] = kinds[row["class"]]
    scores = _pooled_scores(scored, semantic, instance, connectomics, kinds)
    result = {"classes": scored, "kinds": kinds, "threshold": threshold, "iou_threshold": iou_threshold,
              "scores": scores, "rows": rows, "table": _table(scores, scored, kinds),
              "prediction": str(prediction), "truth": str(truth) if truth is not None else None,
              "crops": [item[0] for item in items]}
    if report:
        _write_report(result, Path(report))
    if figure:
        _write_figure(Path(figure), panels, scores, kinds, raw, options)
        result["figure"] = str(figure)
    return result


def evaluate_semantic(cfg, *, prediction: str, truth: str, threshold: float | None = None,
                      report: str | None = None, **options) -> dict:
    """Semantic scores only (IoU, Dice, precision, recall per class): ``evaluate(kind="semantic")``."""
    return evaluate(cfg, prediction=prediction, truth=truth, kind="semantic", threshold=threshold, report=report,
                    **options)


# ----------------------------------------------------------------------------- one crop x class


def _items(prediction, truth, crops, classes) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(crop name, truth group, prediction group, classes annotated) per crop to score."""
    pred = str(prediction).rstrip("/")
    if crops is None:
        if truth is None:
            raise DataError.at("evaluate", "no ground truth given", fix="pass --truth CROP_GROUP or --crops DATASPLIT")
        truth = str(truth).rstrip("/")
        return [(truth.rpartition("/")[2], truth, pred, tuple(classes))]
    from bioloop.data.datasplit import read_datasplit

    entries = [e for e in read_datasplit(crops) if e.usage == "validate"]
    if not entries:
        raise DataError.at(str(crops), "the datasplit has no 'validate' crops to evaluate",
                           fix="mark the crops to score with usage \"validate\"")
    return [(e.gt_path.rstrip("/").rpartition("/")[2], e.gt_path.rstrip("/"),
             f"{pred}/{e.gt_path.rstrip('/').rpartition('/')[2]}", e.classes) for e in entries]


def _truth_image(cfg, path: str, options):
    """(volume, values) when ``path`` is one label image (tif, zarr array, OME-NGFF image); None for a crop group."""
    try:
        volume = open_native(path, _fill_in_scale(cfg), storage_options=options)
    except DataError:
        if is_tif(path):
            raise
        return None  # a zarr group that is not an image: a crop group with one image per class
    if volume.ndim != len(volume.spatial_shape):
        raise DataError.at(path, "a truth label image cannot have a channel axis", got=volume.axes,
                           fix="save the labels as ZYX or YX")
    values = volume.read((0,) * volume.ndim, volume.shape)
    if len(volume.spatial_shape) == 2:  # a 2D (y, x) array: one z-slice, as 2D predictions are written
        z = (_fill_in_scale(cfg) or (1.0,))[0]
        values = values[None]
        volume = Volume(values, (float(z), *volume.scale), (0.0, *volume.translation), ("z", "y", "x"), volume.path)
    if values.dtype.kind not in "biu":
        if not np.array_equal(values, np.round(values)):
            raise DataError.at(path, "truth labels must be integers", got=str(values.dtype),
                               fix="write instance or class ids as an integer image")
        values = values.astype(np.int64)
    return volume, values


def _truth_of_class(cfg, image, group: str, name: str, options):
    """(volume giving the truth grid, integer truth of class ``name``: instance ids or a 0/1 mask) or None."""
    if image is None:
        try:
            gt = open_native(f"{group}/{name}", _fill_in_scale(cfg), storage_options=options)
        except DataError:
            return None
        return gt, gt.read((0,) * len(gt.spatial_shape), gt.spatial_shape)
    volume, values = image
    layout = getattr(cfg, "label_layout", "per_class")
    classes = list(cfg.classes)
    if layout == "class_ids":
        ids = getattr(cfg, "class_ids", None) or {c: i + 1 for i, c in enumerate(classes)}
        return volume, _components(values == int(ids[name]))
    if len(classes) != 1:
        raise DataError.at(group, f"one label image holds the truth of {len(classes)} classes {classes}, but "
                           f"label_layout is '{layout}'", fix="its values are class ids: set label_layout = "
                           "'class_ids' (and class_ids), e.g. `-s label_layout=class_ids`; or give a crop group "
                           "with one image per class")
    return volume, values


def _components(mask: np.ndarray) -> np.ndarray:
    """Instances of one class in a class-id image: its face-connected components."""
    from scipy import ndimage

    return ndimage.label(mask)[0].astype(np.uint32)


def _fill_in_scale(cfg):
    """Voxel size (nm) for truth images that do not state one: the config's target voxel size."""
    info = getattr(cfg, "target_array_info", None) or getattr(cfg, "input_array_info", None)
    return tuple(info.scale) if info is not None else None


def _score(cfg, gt, truth, pred_path, name, kind, threshold, iou_threshold, options) -> dict:
    try:
        pred = open_volume(pred_path, gt.scale, storage_options=options)
    except DataError:
        pred = open_volume(pred_path, None, storage_options=options)  # another voxel size: resample below
    stored_dtype = str(pred.dtype)
    pred = decoded(pred, pred_path, options)  # uint8 probabilities from predict -> float32 in [0, 1]
    is_float = pred.dtype.kind == "f"
    if is_float and kind == "instance":
        raise DataError.at(pred_path, "instance scores need integer labels, but this prediction holds "
                           "probabilities", got=str(pred.dtype), fix="run `bioloop process` on it first")
    values = _on_truth_grid(pred, gt, labels=not is_float, where=pred_path)
    mask = values > threshold if is_float else values > 0
    row = {"class": name, "kind": "semantic", "prediction_dtype": stored_dtype}
    sem = semantic_counts(truth > 0, mask)
    row.update({k: v for k, v in semantic_scores(sem).items()})
    row.update({f"{k}_voxels": v for k, v in sem.items()})
    row["_auto_instance"] = False
    row["_instance_counts"] = None
    row["_shown"] = values
    if not is_float and kind != "semantic":
        counts = instance_counts(truth, values, voxel_size=gt.scale, iou_threshold=iou_threshold)
        row["_instance_counts"] = counts
        row["_auto_instance"] = (counts["n_pred"] > 1 or _marked_instance(pred_path, options)
                                 or _process_says_instance(cfg, name))
        for key, value in scores_from_instance_counts(counts).items():
            row[_rename(key)] = value
        row["_segmentation_counts"] = segmentation_counts(values, truth)
        row.update(scores_from_segmentation_counts(row["_segmentation_counts"]))
    return row


def _rename(key: str) -> str:
    return _INSTANCE_KEYS.get(key, {"tp": "tp_instances", "fp": "fp_instances", "fn": "fn_instances"}.get(key, key))


def _instance_row_keys() -> set[str]:
    keys = ("n_truth", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "rq", "sq", "mean_matched_iou", "pq",
            "normalized_hausdorff")
    return {_rename(k) for k in keys} | set(_SEGMENTATION_KEYS)


def _write_figure(path: Path, panels, scores, kinds, raw, options) -> None:
    """The z-slice with the most truth foreground of the first crop, per class: raw, truth, prediction."""
    from bioloop.data.sources import open_image
    from bioloop.tasks.segmentation.figures import evaluation_figure

    if not panels:
        return
    first = panels[0]
    z = int(np.argmax((np.asarray(first["truth"]) > 0).reshape(first["truth"].shape[0], -1).sum(axis=1)))
    raw = raw or _bioloop_attr(first["path"], "raw", options)
    raw_plane = None
    if raw:
        volume = open_image(raw, tuple(first["gt"].scale), storage_options=options)  # on the truth's voxel size
        raw_plane = _on_truth_grid(volume, first["gt"], labels=False, where=str(raw))[z]
    else:
        print(f"{path}: no raw image recorded with the prediction; the figure shows truth and prediction only "
              "(pass --raw IMAGE to add it)", file=sys.stderr, flush=True)
    shown = []
    for panel in panels:
        name = panel["name"]
        text = (f"F1 {scores[f'f1/{name}']:.3f}  VOI {scores[f'voi/{name}']:.3f}  ARAND {scores[f'arand_error/{name}']:.3f}"
                if kinds[name] == "instance" else f"IoU {scores[f'iou/{name}']:.3f}")
        shown.append({"name": name, "z": z, "raw": raw_plane, "truth": np.asarray(panel["truth"])[z],
                      "prediction": np.asarray(panel["prediction"])[z], "scores": text})
    fig = evaluation_figure(shown, title=f"crop {first['crop']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _bioloop_attr(path: str, key: str, options):
    """A value bioloop wrote into an image's ``bioloop`` attributes (None when absent or unreadable)."""
    try:
        import zarr

        group = zarr.open_group(path, mode="r", storage_options=options) if options else zarr.open_group(path, mode="r")
        return dict(group.attrs).get("bioloop", {}).get(key)
    except Exception:  # noqa: BLE001 - a plain array or a foreign image carries no bioloop attributes
        return None


def _marked_instance(path: str, options) -> bool:
    """Whether ``bioloop process`` marked this image as instance labels."""
    try:
        import zarr

        group = zarr.open_group(path, mode="r", storage_options=options) if options else zarr.open_group(path, mode="r")
        return dict(group.attrs).get("bioloop", {}).get("kind") == "instance"
    except Exception:  # noqa: BLE001 - a plain array or a foreign image carries no marker
        return False


def _process_says_instance(cfg, name: str) -> bool:
    process = getattr(cfg, "process", None)
    if process is None:
        return False
    if hasattr(process, "is_instance"):
        return bool(process.is_instance(name))
    listed = getattr(process, "instance_classes", None) or []
    return listed == "all" or name in listed


def _on_truth_grid(pred, gt, *, labels: bool, where: str) -> np.ndarray:
    """The prediction at the truth's voxel centres: nearest (labels) or linear, reading one box only."""
    coords, boxes = [], []
    for k, n in enumerate(gt.spatial_shape):
        c = (gt.translation[k] + np.arange(n) * gt.scale[k] - pred.translation[k]) / pred.scale[k]
        m = pred.spatial_shape[k]
        if c.min() < -0.5 - 1e-3 or c.max() > m - 0.5 + 1e-3:
            raise DataError.at(where, "prediction does not cover the truth crop",
                               got={"prediction_nm": pred.roi, "truth_nm": gt.roi},
                               fix="predict with a --roi that contains the crop")
        if labels:
            index = [np.clip(np.floor(c + 0.5 + 1e-6), 0, m - 1).astype(np.int64)]
        else:
            i0 = np.clip(np.floor(c + 1e-6), 0, m - 1).astype(np.int64)
            index = [i0, np.minimum(i0 + 1, m - 1)]
        coords.append((index, np.clip(c - index[0], 0, 1)))
        boxes.append((int(index[0].min()), int(index[-1].max()) + 1))
    data = pred.read(tuple(a for a, _ in boxes), tuple(b - a for a, b in boxes))
    for axis, ((index, frac), (lo, _)) in enumerate(zip(coords, boxes)):
        if labels:
            data = np.take(data, index[0] - lo, axis=axis)
            continue
        shape = [1] * data.ndim
        shape[axis] = -1
        weight = frac.reshape(shape).astype(np.float32)
        data = np.take(data, index[0] - lo, axis=axis) * (1 - weight) + np.take(data, index[1] - lo, axis=axis) * weight
    return data


# ----------------------------------------------------------------------------- pooling and reports


def _pooled_scores(scored, semantic, instance, connectomics, kinds) -> dict[str, float]:
    """Scores from counts pooled over crops; keys as in metrics.scores_from_counts plus instance keys."""
    scores: dict[str, float] = {}
    for name in scored:
        tp, fp, fn = semantic[name]
        for key, value in semantic_scores({"tp": tp, "fp": fp, "fn": fn}).items():
            scores[f"{key}/{name}"] = value
    for key in ("iou", "dice"):
        defined = [scores[f"{key}/{c}"] for c in scored if not math.isnan(scores[f"{key}/{c}"])]
        scores[f"{key}_mean"] = float(np.mean(defined)) if defined else math.nan
    inst = [c for c in scored if kinds[c] == "instance"]
    for name in inst:
        pooled = scores_from_instance_counts(pool_instance_counts(instance[name]))
        for key, value in pooled.items():
            scores[f"{_rename(key)}/{name}"] = float(value)
        for key, value in scores_from_segmentation_counts(pool_segmentation_counts(connectomics[name])).items():
            scores[f"{key}/{name}"] = float(value)
    for key in ("pq", "f1", "normalized_hausdorff", "voi", "arand_error"):
        if inst:
            scores[f"{key}_mean"] = float(np.mean([scores[f"{key}/{c}"] for c in inst]))
    return scores


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _lines(header: list[str], rows: list[list[str]], footer: list[str] | None = None) -> list[str]:
    every = [header, *rows, *([footer] if footer else [])]
    widths = [max(len(r[i]) for r in every) for i in range(len(header))]

    def line(cells):
        return "  ".join([cells[0].ljust(widths[0]), *[c.rjust(w) for c, w in zip(cells[1:], widths[1:])]]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(header), rule, *[line(r) for r in rows], *([rule, line(footer)] if footer else [])]


def _table(scores: dict, classes: list[str], kinds: dict[str, str]) -> str:
    """Semantic scores per class (and their mean); a second table for instance classes."""
    rows = [[c, *[_cell(scores[f"{k}/{c}"]) for k in ("iou", "dice", "precision", "recall")]] for c in classes]
    mean = ["mean", _cell(scores["iou_mean"]), _cell(scores["dice_mean"]), "", ""]
    lines = _lines(["class", "IoU", "Dice", "precision", "recall"], rows, mean)
    inst = [c for c in classes if kinds[c] == "instance"]
    if inst:
        rows = [[c, *[_cell(scores[f"{k}/{c}"]) for _, k in _INSTANCE_COLUMNS],
                 str(int(scores[f"n_truth/{c}"])), str(int(scores[f"n_pred/{c}"]))] for c in inst]
        lines += ["", *_lines(["instances", *[h for h, _ in _INSTANCE_COLUMNS], "truth", "pred"], rows)]
    return "\n".join(lines)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def _write_report(result: dict, path: Path) -> None:
    """JSON report at ``path`` and a CSV (one row per crop x class) with the same stem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v for k, v in result.items() if k != "table"}
    plain["scores"] = {k: _plain(v) for k, v in result["scores"].items()}
    plain["rows"] = [{k: _plain(v) for k, v in row.items()} for row in result["rows"]]
    path.write_text(json.dumps(plain, indent=2))
    columns: list[str] = []
    for row in result["rows"]:
        columns += [k for k in row if k not in columns]
    with open(path.with_suffix(".csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in plain["rows"]:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
