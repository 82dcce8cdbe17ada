"""Scoring predictions against truth crops: semantic and instance scores, resampling, pooling, reports."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from bioloop.data.datasplit import CropEntry, write_datasplit
from bioloop.data.ngff import open_volume, write_volume
from bioloop.errors import DataError
from bioloop.tasks.segmentation.evaluate import _on_truth_grid, evaluate, evaluate_semantic
from bioloop.tasks.segmentation.process import ProcessConfig, process_volume

SCALE = (8.0, 8.0, 8.0)


def _cfg(classes=("nuc", "mito"), **extra):
    return SimpleNamespace(classes=list(classes), threshold=0.5, storage_options={}, **extra)


def _image(path, data, scale=SCALE, translation=(0.0, 0.0, 0.0)):
    write_volume(str(path), np.asarray(data), scale=scale, translation=translation)


def _semantic_case(root):
    """Truth 1 x 2 x 4 with 3 nuc voxels; prediction: TP 2, FP 1, FN 1 -> IoU 1/2, Dice 2/3."""
    truth = np.array([[[1, 1, 1, 0], [0, 0, 0, 0]]], np.uint8)
    probs = np.array([[[0.9, 0.8, 0.2, 0.7], [0.1, 0.0, 0.4, 0.3]]], np.float32)
    _image(root / "gt.zarr/crop1/nuc", truth)
    _image(root / "pred.zarr/nuc", probs)
    return str(root / "pred.zarr"), str(root / "gt.zarr/crop1")


def test_semantic_golden_scores_report_and_csv(tmp_path, capsys):
    prediction, truth = _semantic_case(tmp_path)
    report = tmp_path / "out" / "scores.json"
    result = evaluate(_cfg(), prediction=prediction, truth=truth, report=str(report), show_progress=False)
    assert f"{truth}: no truth image for class 'mito' (looked for {truth}/mito); not scored" in capsys.readouterr().err
    s = result["scores"]
    assert result["classes"] == ["nuc"] and result["kinds"] == {"nuc": "semantic"}  # mito has no truth here
    assert s["iou/nuc"] == pytest.approx(0.5) and s["dice/nuc"] == pytest.approx(2 / 3)
    assert s["precision/nuc"] == pytest.approx(2 / 3) and s["recall/nuc"] == pytest.approx(2 / 3)
    assert "IoU" in result["table"] and "nuc" in result["table"] and "F1" not in result["table"]
    saved = json.loads(report.read_text())
    assert saved["scores"]["iou/nuc"] == pytest.approx(0.5) and "table" not in saved
    rows = list(csv.DictReader(open(report.with_suffix(".csv"))))
    assert len(rows) == 1 and rows[0]["crop"] == "crop1" and rows[0]["class"] == "nuc"
    assert float(rows[0]["iou"]) == pytest.approx(0.5) and rows[0]["tp_voxels"] == "2"
    # the old entry point still gives the same scores; a threshold can be passed
    old = evaluate_semantic(_cfg(), prediction=prediction, truth=truth, threshold=0.75, show_progress=False)
    assert old["scores"]["iou/nuc"] == pytest.approx(2 / 3)  # only 0.9 and 0.8 count now: TP 2, FN 1


def test_resampling_to_the_truth_grid_is_linear_for_probabilities_and_nearest_for_labels(tmp_path):
    # prediction: 16 nm voxels along x starting at 0; truth: 8 nm voxels starting at 8 nm
    _image(tmp_path / "p", np.array([[[0.0, 1.0, 2.0, 3.0]]], np.float32), scale=(8, 8, 16))
    _image(tmp_path / "l", np.array([[[1, 2, 3, 4]]], np.uint32), scale=(8, 8, 16))
    _image(tmp_path / "t", np.zeros((1, 1, 4), np.uint8), translation=(0, 0, 8))
    gt = open_volume(tmp_path / "t")
    # truth centres at 8, 16, 24, 32 nm = prediction voxels 0.5, 1, 1.5, 2
    linear = _on_truth_grid(open_volume(tmp_path / "p"), gt, labels=False, where="p")
    np.testing.assert_allclose(linear.ravel(), [0.5, 1.0, 1.5, 2.0])
    nearest = _on_truth_grid(open_volume(tmp_path / "l"), gt, labels=True, where="l")
    assert nearest.dtype == np.uint32 and nearest.ravel().tolist() == [2, 2, 3, 3]


def test_prediction_must_cover_the_truth_crop(tmp_path):
    _image(tmp_path / "gt.zarr/c/nuc", np.ones((1, 2, 4), np.uint8), translation=(0, 0, 16))
    _image(tmp_path / "pred.zarr/nuc", np.ones((1, 2, 4), np.float32))
    with pytest.raises(DataError, match="pred.zarr/nuc: prediction does not cover the truth crop"):
        evaluate(_cfg(), prediction=str(tmp_path / "pred.zarr"), truth=str(tmp_path / "gt.zarr/c"),
                 show_progress=False)


def _instance_case(root):
    truth = np.zeros((1, 4, 10), np.uint16)
    truth[0, :, 0:4], truth[0, :, 5:7], truth[0, :, 8:10] = 1, 2, 3
    pred = np.zeros((1, 4, 10), np.uint32)
    pred[0, :, 0:3], pred[0, :, 5:8] = 5, 7
    _image(root / "gt.zarr/crop1/mito", truth)
    _image(root / "pred.zarr/mito", pred)
    return str(root / "pred.zarr"), str(root / "gt.zarr/crop1")


def test_integer_predictions_with_several_ids_get_instance_scores(tmp_path):
    prediction, truth = _instance_case(tmp_path)
    report = tmp_path / "r.json"
    result = evaluate(_cfg(), prediction=prediction, truth=truth, report=str(report), show_progress=False)
    s = result["scores"]
    assert result["kinds"] == {"mito": "instance"}
    # IoUs 3/4 and 2/3 match, truth 3 is missed: F1 = 4/5, SQ = 17/24
    assert s["f1/mito"] == pytest.approx(0.8) and s["sq/mito"] == pytest.approx(17 / 24)
    assert s["pq/mito"] == pytest.approx(0.8 * 17 / 24) and s["pq_mean"] == pytest.approx(0.8 * 17 / 24)
    assert s["instance_precision/mito"] == 1.0 and s["instance_recall/mito"] == pytest.approx(2 / 3)
    assert s["normalized_hausdorff/mito"] == pytest.approx(2 * 1.01 ** (-8 / math.sqrt(3 * 64)) / 3)
    assert s["iou/mito"] == pytest.approx(20 / 36)  # semantic scores from label > 0: TP 20, FP 4, FN 12
    assert "PQ" in result["table"] and "NHD" in result["table"] and "VOI split" in result["table"]
    from skimage.metrics import adapted_rand_error, variation_of_information

    gt_ids, pred_ids = open_volume(f"{truth}/mito").read((0, 0, 0), (1, 4, 10)), open_volume(f"{prediction}/mito").read(
        (0, 0, 0), (1, 4, 10))
    split, merge = variation_of_information(gt_ids, pred_ids)
    assert s["voi_split/mito"] == pytest.approx(split) and s["voi_merge/mito"] == pytest.approx(merge)
    assert s["voi/mito"] == pytest.approx(split + merge) == s["voi_mean"]
    assert s["arand_error/mito"] == pytest.approx(adapted_rand_error(gt_ids, pred_ids)[0]) == s["arand_error_mean"]
    row = next(csv.DictReader(open(report.with_suffix(".csv"))))
    assert row["kind"] == "instance" and float(row["f1"]) == pytest.approx(0.8) and row["n_truth"] == "3"
    semantic = evaluate(_cfg(), prediction=prediction, truth=truth, kind="semantic", show_progress=False)
    assert semantic["kinds"] == {"mito": "semantic"} and "f1/mito" not in semantic["scores"]


def test_a_label_image_is_truth_directly(tmp_path):
    import tifffile
    import zarr

    prediction, crop = _instance_case(tmp_path)
    from_group = evaluate(_cfg(["mito"]), prediction=prediction, truth=crop, show_progress=False)["scores"]
    ids = open_volume(f"{crop}/mito").read((0, 0, 0), (1, 4, 10))
    # a tif of instance ids without voxel size (the config's is used), and the same as a plain 2D zarr array
    tifffile.imwrite(tmp_path / "labels.tif", ids[0])
    zarr.create_array(str(tmp_path / "labels.zarr"), data=ids[0])
    cfg = _cfg(["mito"], input_array_info=SimpleNamespace(shape=(1, 4, 4), scale=SCALE))
    for truth in (tmp_path / "labels.tif", tmp_path / "labels.zarr"):
        result = evaluate(cfg, prediction=prediction, truth=str(truth), show_progress=False)
        assert result["kinds"] == {"mito": "instance"}
        assert result["scores"] == pytest.approx(from_group)
    # class ids: one image labels both classes (1 = nuc, 2 = mito); each class is scored against its own mask
    classes = np.zeros((1, 4, 10), np.uint8)
    classes[0, :, :5], classes[0, :, 6:] = 1, 2
    tifffile.imwrite(tmp_path / "classes.tif", classes)
    _image(tmp_path / "p.zarr/nuc", (classes == 1).astype(np.float32))
    _image(tmp_path / "p.zarr/mito", (classes == 2).astype(np.float32) * 0.4)  # below the threshold
    cfg = _cfg(["nuc", "mito"], input_array_info=SimpleNamespace(shape=(1, 4, 4), scale=SCALE),
               label_layout="class_ids", class_ids={"nuc": 1, "mito": 2})
    s = evaluate(cfg, prediction=str(tmp_path / "p.zarr"), truth=str(tmp_path / "classes.tif"),
                 show_progress=False)["scores"]
    assert s["iou/nuc"] == 1.0 and s["iou/mito"] == 0.0 and s["recall/mito"] == 0.0
    with pytest.raises(DataError, match=r"classes.tif: one label image holds the truth of 2 classes.*label_layout"):
        evaluate(_cfg(["nuc", "mito"]), prediction=str(tmp_path / "p.zarr"), truth=str(tmp_path / "classes.tif"),
                 show_progress=False)


def test_processed_labels_are_scored_as_instances_even_with_one_object(tmp_path):
    truth = np.zeros((1, 6, 6), np.uint8)
    truth[0, 1:4, 1:4] = 1
    _image(tmp_path / "gt.zarr/crop1/mito", truth)
    _image(tmp_path / "probs.zarr/mito", truth.astype(np.float32) * 0.9)
    process_volume(ProcessConfig(instance_classes=["mito"]), ["mito"], input=str(tmp_path / "probs.zarr"),
                   output=str(tmp_path / "labels.zarr"), show_progress=False)
    result = evaluate(_cfg(), prediction=str(tmp_path / "labels.zarr"), truth=str(tmp_path / "gt.zarr/crop1"),
                      show_progress=False)
    assert result["kinds"] == {"mito": "instance"} and result["scores"]["pq/mito"] == pytest.approx(1.0)
    # a plain 0/1 mask is semantic under "auto", unless the config's process section names the class
    _image(tmp_path / "mask.zarr/mito", truth)
    plain = evaluate(_cfg(), prediction=str(tmp_path / "mask.zarr"), truth=str(tmp_path / "gt.zarr/crop1"),
                     show_progress=False)
    assert plain["kinds"] == {"mito": "semantic"}
    named = evaluate(_cfg(process=ProcessConfig(instance_classes=["mito"])), prediction=str(tmp_path / "mask.zarr"),
                     truth=str(tmp_path / "gt.zarr/crop1"), show_progress=False)
    assert named["kinds"] == {"mito": "instance"}


def test_instance_scores_need_labels_not_probabilities(tmp_path):
    prediction, truth = _semantic_case(tmp_path)
    with pytest.raises(DataError, match="pred.zarr/nuc: instance scores need integer labels.*run `bioloop process`"):
        evaluate(_cfg(), prediction=prediction, truth=truth, kind="instance", show_progress=False)


def test_validate_crops_of_a_datasplit_are_pooled(tmp_path):
    gt = tmp_path / "gt.zarr"
    for crop, (truth, probs) in {"crop1": ([1, 1, 0, 0], [0.9, 0.1, 0.9, 0.0]),
                                 "crop2": ([1, 1, 1, 1], [0.9, 0.9, 0.9, 0.0]),
                                 "crop3": ([1, 1, 1, 1], [0.0, 0.0, 0.0, 0.0])}.items():
        _image(gt / crop / "nuc", np.array([[truth]], np.uint8))
        _image(tmp_path / "pred.zarr" / crop / "nuc", np.array([[probs]], np.float32))
    write_datasplit(tmp_path / "split.csv", [CropEntry("validate", "raw", str(gt / "crop1"), ("nuc",)),
                                             CropEntry("validate", "raw", str(gt / "crop2"), ("nuc", "mito")),
                                             CropEntry("train", "raw", str(gt / "crop3"), ("nuc",))])
    report = tmp_path / "pooled.json"
    result = evaluate(_cfg(), prediction=str(tmp_path / "pred.zarr"), crops=str(tmp_path / "split.csv"),
                      report=str(report), show_progress=False)
    assert result["crops"] == ["crop1", "crop2"]  # the train crop is not scored
    # pooled: TP 1 + 3, FP 1 + 0, FN 1 + 1 -> IoU 4/7 (not the mean of 1/3 and 3/4)
    assert result["scores"]["iou/nuc"] == pytest.approx(4 / 7)
    rows = list(csv.DictReader(open(report.with_suffix(".csv"))))
    assert [(r["crop"], r["class"]) for r in rows] == [("crop1", "nuc"), ("crop2", "nuc")]


def test_datasplit_without_validate_crops(tmp_path):
    write_datasplit(tmp_path / "split.csv", [CropEntry("train", "raw", str(tmp_path / "gt.zarr/c"), ("nuc",))])
    with pytest.raises(DataError, match="split.csv: the datasplit has no 'validate' crops"):
        evaluate(_cfg(), prediction=str(tmp_path / "p"), crops=str(tmp_path / "split.csv"), show_progress=False)


def test_argument_errors(tmp_path):
    prediction, truth = _semantic_case(tmp_path)
    with pytest.raises(DataError, match="evaluate: unknown kind"):
        evaluate(_cfg(), prediction=prediction, truth=truth, kind="panoptic")
    with pytest.raises(DataError, match="evaluate: no ground truth given"):
        evaluate(_cfg(), prediction=prediction)
    with pytest.raises(DataError, match="no ground truth for any of the classes"):
        evaluate(_cfg(classes=["er"]), prediction=prediction, truth=truth, show_progress=False)


def test_figure_without_a_recorded_raw_image_says_so(tmp_path, capsys):
    import matplotlib.image

    prediction, truth = _instance_case(tmp_path)
    figure = tmp_path / "slice.png"
    result = evaluate(_cfg(), prediction=prediction, truth=truth, figure=str(figure), show_progress=False)
    assert result["figure"] == str(figure)
    assert f"{figure}: no raw image recorded with the prediction" in capsys.readouterr().err
    picture = matplotlib.image.imread(figure)
    assert picture.shape[1] == 2 * picture.shape[0]  # one class: truth and prediction, two square panels
    _image(tmp_path / "raw.zarr/raw", np.arange(40, dtype=np.uint8).reshape(1, 4, 10))
    evaluate(_cfg(), prediction=prediction, truth=truth, figure=str(figure), raw=str(tmp_path / "raw.zarr/raw"),
             show_progress=False)
    assert "no raw image" not in capsys.readouterr().err
    assert matplotlib.image.imread(figure).shape[1] == 3 * picture.shape[0]  # a third panel: the raw slice
