"""Tracking metrics: motmetrics on hand-made sequences, CTC DET/TRA with hand-computed AOGM."""

from __future__ import annotations

import numpy as np
import pytest

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.metrics import ctc_scores, mot_metrics, read_ctc_folder, untracked_count
from bioloop.tasks.tracking.types import Instances


def _f(t, xy, ids, half=5.0):
    xy = np.asarray(xy, float).reshape(-1, 2)
    return Instances(frame=t, points=xy[:, None], boxes=np.c_[xy - half, xy + half], track_ids=ids)


GT = [_f(t, [[10 + t, 10], [50, 50 + t]], [1, 2]) for t in range(3)]


def _pred():
    """Ids 100/200 (matched by position, not id); one FP (frame 1); id 300 takes GT 1 (frame 2)."""
    return [_f(0, [[10, 10], [50, 50]], [100, 200]),
            _f(1, [[11, 10], [50, 51], [200, 200]], [100, 200, 400]),
            _f(2, [[12, 10], [50, 52]], [300, 200])]


def test_hand_made_sequence_one_switch_one_fp():
    m = mot_metrics(GT, _pred(), metrics=("num_switches", "num_false_positives", "num_misses",
                                          "mota", "idf1", "idtp", "num_matches"))
    assert m["num_switches"] == 1 and m["num_false_positives"] == 1 and m["num_misses"] == 0
    assert m["num_matches"] == 5 and m["idtp"] == 5  # motmetrics counts the switch apart
    assert m["mota"] == pytest.approx(1 - 2 / 6)  # 1 - (FN + FP + IDSW) / n_gt
    assert m["idf1"] == pytest.approx(10 / 13)  # 2 IDTP / (2 IDTP + IDFP 2 + IDFN 1)


def test_untracked_instances_count_as_detections_or_are_excluded():
    pred = [_f(t, np.r_[f.centroids, [[300, 300]]], [7, 8, -1]) for t, f in enumerate(GT)]
    m = mot_metrics(GT, pred)  # each untracked instance is a one-frame track: 3 false positives
    assert m == {"num_switches": 0.0, "num_false_positives": 3.0, "num_misses": 0.0,
                 "mota": 0.5, "idf1": pytest.approx(12 / 15)}  # 2 IDTP / (2 IDTP + IDFP + IDFN)
    assert mot_metrics(GT, pred, untracked="exclude") == {"num_switches": 0.0, "num_false_positives": 0.0,
                                                          "num_misses": 0.0, "mota": 1.0, "idf1": 1.0}
    assert untracked_count(pred) == 3
    # an untracked instance on a true object matches it: the id changes 7 -> new -> 7 (2 switches)
    on_gt = [_f(t, f.centroids, [7, 8] if t != 1 else [-1, 8]) for t, f in enumerate(GT)]
    m = mot_metrics(GT, on_gt, metrics=("num_switches", "num_false_positives", "num_misses", "mota"))
    assert m == {"num_switches": 2.0, "num_false_positives": 0.0, "num_misses": 0.0, "mota": 1 - 2 / 6}
    with pytest.raises(ConfigError, match="must be 'count' or 'exclude'"):
        mot_metrics(GT, pred, untracked="ignore")


def test_iou_threshold_and_centroid_matching():
    # shifted 6 px: box IoU = 4*10 / (200 - 40) = 0.25 < 0.5 -> miss + FP each frame
    pred = [_f(t, f.centroids + [6, 0], [1, 2]) for t, f in enumerate(GT)]
    m = mot_metrics(GT, pred, metrics=("num_misses", "num_false_positives"))
    assert m == {"num_misses": 6.0, "num_false_positives": 6.0}
    assert mot_metrics(GT, pred, metrics=("num_misses",), threshold=0.2)["num_misses"] == 0
    near = mot_metrics(GT, pred, metrics=("num_misses",), match="centroid", threshold=7)
    far = mot_metrics(GT, pred, metrics=("num_misses",), match="centroid", threshold=5)
    assert near["num_misses"] == 0 and far["num_misses"] == 6


def test_metric_name_errors():
    msg = r"runner.metrics.val: unknown motmetrics metric 'idf_1' \(did you mean 'idf1'\?\)"
    with pytest.raises(ConfigError, match=msg):
        mot_metrics(GT, GT, metrics=("idf_1",), where="runner.metrics.val")
    with pytest.raises(ConfigError, match="must be 'iou' or 'centroid'"):
        mot_metrics(GT, GT, match="mask")
    with pytest.raises(ConfigError, match="centroid matching needs a distance"):
        mot_metrics(GT, GT, match="centroid")


# ----------------------------------------------------------------------------- CTC
def _masks(spec, shape=(20, 20)):
    """spec: per frame {label: (row, col)} -> 4x4 squares."""
    out = []
    for frame in spec:
        m = np.zeros(shape, np.uint16)
        for lab, (r, c) in frame.items():
            m[r:r + 4, c:c + 4] = lab
        out.append(m)
    return out


GT_SPEC = [{1: (0, 0), 2: (10, 10)}] * 3
GT_TRACKS = np.array([[1, 0, 2, 0], [2, 0, 2, 0]])


def test_ctc_perfect_result_scores_one():
    s = ctc_scores(_masks(GT_SPEC), _masks([{5: (0, 0), 9: (10, 10)}] * 3), GT_TRACKS,
                   np.array([[5, 0, 2, 0], [9, 0, 2, 0]]))
    assert s["DET"] == 1.0 and s["TRA"] == 1.0


def test_ctc_missed_detection_and_id_switch():
    # B missed at frame 1 (FN; GT edges B0-B1, B1-B2 missing), A's label changes at frame 2 (EA)
    res = _masks([{1: (0, 0), 2: (10, 10)}, {1: (0, 0)}, {3: (0, 0), 4: (10, 10)}])
    tracks = np.array([[1, 0, 1, 0], [2, 0, 0, 0], [3, 2, 2, 0], [4, 2, 2, 0]])
    s = ctc_scores(_masks(GT_SPEC), res, GT_TRACKS, tracks)
    assert (s["FN"], s["FP"], s["NS"], s["EA"], s["ED"], s["EC"]) == (1, 0, 0, 3, 0, 0)
    assert s["DET"] == pytest.approx(1 - 10 / 60)
    assert s["TRA"] == pytest.approx(1 - (10 + 1.5 * 3) / (60 + 1.5 * 4))
    # the switch written as a division (3's parent is 1): the edge exists with the wrong type
    tracks[2, 3] = 1
    s = ctc_scores(_masks(GT_SPEC), res, GT_TRACKS, tracks)
    assert (s["EA"], s["EC"]) == (2, 1)
    assert s["TRA"] == pytest.approx(1 - (10 + 1.5 * 2 + 1) / 66)


def test_ctc_split_false_positive_and_extra_edge():
    # frame 0: one result object covers both GT cells (1 split); frame 1: perfect + one FP
    res = [np.zeros((20, 20), np.uint16) for _ in range(2)]
    res[0][0:14, 0:14] = 1
    res[1][0:4, 0:4], res[1][10:14, 10:14], res[1][16:20, 16:20] = 1, 2, 3
    tracks = np.array([[1, 0, 1, 0], [2, 1, 1, 0], [3, 1, 1, 0]])
    s = ctc_scores(_masks(GT_SPEC[:2]), res, np.array([[1, 0, 1, 0], [2, 0, 1, 0]]), tracks)
    assert (s["NS"], s["FP"], s["FN"]) == (1, 1, 0)
    # AOGM first keeps only result objects that match exactly one GT object: the split object (1, 0)
    # goes, and with it its edge (1,0)->(1,1), so both GT edges A0->A1 and B0->B1 are missing
    assert (s["EA"], s["ED"], s["EC"]) == (2, 0, 0)
    assert s["DET"] == pytest.approx(1 - 6 / 40)
    assert s["TRA"] == pytest.approx(1 - (6 + 1.5 * 2) / 43)


def test_ctc_false_positive_track_costs_only_its_nodes():
    # the reported bug: edges of a false-positive track were counted as edges to delete (ED)
    res = _masks([{1: (0, 0), 2: (10, 10), 3: (15, 0)}] * 3)
    s = ctc_scores(_masks(GT_SPEC), res, GT_TRACKS, np.array([[1, 0, 2, 0], [2, 0, 2, 0], [3, 0, 2, 0]]))
    assert (s["FP"], s["ED"], s["EA"], s["EC"]) == (3, 0, 0, 0)
    assert s["TRA"] == pytest.approx(1 - 3 / (60 + 1.5 * 4))


def test_ctc_folders_round_trip(tmp_path):
    import tifffile

    gt_dir, res_dir = tmp_path / "01_GT" / "TRA", tmp_path / "01_RES"
    gt_dir.mkdir(parents=True), res_dir.mkdir()
    for t, m in enumerate(_masks(GT_SPEC)):
        tifffile.imwrite(gt_dir / f"man_track{t:03d}.tif", m)
        tifffile.imwrite(res_dir / f"mask{t:03d}.tif", m)
    np.savetxt(gt_dir / "man_track.txt", GT_TRACKS, fmt="%d")
    np.savetxt(res_dir / "res_track.txt", GT_TRACKS, fmt="%d")
    masks, tracks = read_ctc_folder(res_dir)
    assert len(masks) == 3 and tracks.tolist() == GT_TRACKS.tolist()
    s = ctc_scores(gt_dir, res_dir)
    assert s["DET"] == 1.0 and s["TRA"] == 1.0
    with pytest.raises(DataError, match="no man_track.txt or res_track.txt"):
        read_ctc_folder(tmp_path)


def test_ctc_input_errors():
    with pytest.raises(DataError, match="different number of frames"):
        ctc_scores(_masks(GT_SPEC), _masks(GT_SPEC[:2]), GT_TRACKS, GT_TRACKS)
    with pytest.raises(DataError, match="differ in shape"):
        ctc_scores(_masks(GT_SPEC), _masks(GT_SPEC, shape=(30, 30)), GT_TRACKS, GT_TRACKS)
