"""Multi-sequence scores against the reference tools: motmetrics' compute_many(generate_overall=True)
reading the MOT files itself, and TrackEval's HOTA on the same boxes (per sequence and combined)."""

from __future__ import annotations

import numpy as np
import pytest

from bioloop import api
from bioloop.tasks.tracking.metrics_hota import hota, hota_combine
from bioloop.tasks.tracking.types import Instances

mm = pytest.importorskip("motmetrics")
trackeval = pytest.importorskip("trackeval")

METRICS = ["idf1", "idp", "idr", "recall", "precision", "num_unique_objects", "mostly_tracked",
           "partially_tracked", "mostly_lost", "num_false_positives", "num_misses", "num_switches",
           "num_fragmentations", "mota", "motp", "num_transfer", "num_ascend", "num_migrate"]


def _sequence(seed: int, n_frames: int = 30, n_objects: int = 6):
    """MOT rows (frame, id, x, y, w, h) of a GT and of a noisy tracker: jittered boxes, misses, false
    positives, an identity swap and a track that is lost and picked up again under a new id."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 300, (n_objects, 2))
    speed = rng.uniform(-4, 4, (n_objects, 2))
    size = rng.uniform(20, 40, (n_objects, 2))
    gt, pred = [], []
    for t in range(n_frames):
        for k in range(n_objects):
            x, y = start[k] + t * speed[k]
            w, h = size[k]
            gt.append((t + 1, k + 1, x, y, w, h))
            if rng.random() < 0.1:
                continue  # missed
            jitter = rng.normal(0, 3, 4)
            ident = k + 1
            if k in (0, 1) and t >= n_frames // 2:
                ident = 2 if k == 0 else 1  # 1 and 2 swap halfway
            if k == 2 and t > n_frames // 3:
                ident = 90  # lost, then a new id
            pred.append((t + 1, ident, x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]))
        for j in range(rng.poisson(0.7)):
            pred.append((t + 1, 100 + 10 * t + j, *rng.uniform(0, 300, 2), 30.0, 30.0))
    return gt, pred


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{f},{i},{x:.3f},{y:.3f},{w:.3f},{h:.3f},1,-1,-1,-1\n" for f, i, x, y, w, h in rows))


def _instances(rows, n_frames):
    out = []
    for t in range(1, n_frames + 1):
        r = np.array([row for row in rows if row[0] == t], float).reshape(-1, 6)
        boxes = np.c_[r[:, 2:4], r[:, 2:4] + r[:, 4:6]]
        out.append(Instances(t, ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None], boxes, r[:, 1].astype(int)))
    return out


def _trackeval_hota(gt_rows, pred_rows, n_frames):
    """TrackEval's HOTA on its own box IoUs (xywh) and its own id indexing."""
    from trackeval.datasets._base_dataset import _BaseDataset

    g_ids = sorted({r[1] for r in gt_rows})
    p_ids = sorted({r[1] for r in pred_rows})
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": [], "num_gt_ids": len(g_ids),
            "num_tracker_ids": len(p_ids), "num_gt_dets": len(gt_rows), "num_tracker_dets": len(pred_rows)}
    for t in range(1, n_frames + 1):
        g = np.array([r for r in gt_rows if r[0] == t], float).reshape(-1, 6)
        p = np.array([r for r in pred_rows if r[0] == t], float).reshape(-1, 6)
        data["gt_ids"].append(np.array([g_ids.index(i) for i in g[:, 1]], int))
        data["tracker_ids"].append(np.array([p_ids.index(i) for i in p[:, 1]], int))
        data["similarity_scores"].append(_BaseDataset._calculate_box_ious(g[:, 2:6], p[:, 2:6], box_format="xywh"))
    return trackeval.metrics.HOTA().eval_sequence(data)


def test_hota_equals_trackeval_per_sequence_and_combined():
    parts, refs = [], {}
    for seed in (1, 2, 3):
        gt, pred = _sequence(seed)
        ours = hota(_instances(gt, 30), _instances(pred, 30))
        ref = _trackeval_hota(gt, pred, 30)
        for key in ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA", "HOTA_TP", "HOTA_FN",
                    "HOTA_FP"):
            np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=1e-9, err_msg=key)
        parts.append(ours)
        refs[str(seed)] = ref
    assert 0.3 < float(np.mean(parts[0]["HOTA"])) < 0.95  # the noisy tracker is neither perfect nor useless
    combined, ref = hota_combine(parts), trackeval.metrics.HOTA().combine_sequences(refs)
    for key in ("HOTA", "DetA", "AssA", "AssRe", "AssPr", "LocA"):
        np.testing.assert_allclose(combined[key], ref[key], rtol=0, atol=1e-9, err_msg=key)


@pytest.fixture()
def two_sequences(tmp_path):
    names = ["SEQ-A", "SEQ-B"]
    rows = {}
    for seed, name in zip((5, 6), names):
        gt, pred = _sequence(seed)
        _write(tmp_path / "gt" / name / "gt" / "gt.txt", gt)
        _write(tmp_path / "res" / f"{name}.txt", pred)
        rows[name] = (gt, pred)
    (tmp_path / "cfg.py").write_text(f"task = 'tracking'\nrunner = {{'metrics': {{'test': {METRICS!r}}}}}\n")
    return tmp_path, names, rows


def test_several_sequences_equal_motmetrics_compute_many_and_trackeval(two_sequences, monkeypatch):
    root, names, rows = two_sequences
    cfg = api.load_config(root / "cfg.py")  # no dataset section: scoring files needs none
    listed = api.evaluate(cfg, prediction=[str(root / "res" / f"{n}.txt") for n in names],
                          truth=[str(root / "gt" / n / "gt" / "gt.txt") for n in names])
    folder = api.evaluate(cfg, prediction=str(root / "res"), truth=str(root / "gt"))
    assert listed["sequences"] == folder["sequences"] and listed["metrics"] == folder["metrics"]

    monkeypatch.setattr(np, "asfarray", lambda a, dtype=float: np.asarray(a, dtype=dtype), raising=False)
    accs = []
    for n in names:
        gt = mm.io.loadtxt(str(root / "gt" / n / "gt" / "gt.txt"), fmt="mot15-2D", min_confidence=-1)
        res = mm.io.loadtxt(str(root / "res" / f"{n}.txt"), fmt="mot15-2D")
        accs.append(mm.utils.compare_to_groundtruth(gt, res, "iou", distth=0.5))
    ref = mm.metrics.create().compute_many(accs, metrics=METRICS, names=names, generate_overall=True)
    for row in [*names, "OVERALL"]:
        got = listed["metrics"] if row == "OVERALL" else listed["sequences"][row]
        for m in METRICS:
            assert got[m] == pytest.approx(float(ref.loc[row, m]), rel=0, abs=1e-9), (row, m)
    assert 0 < listed["metrics"]["num_switches"] and 0 < listed["metrics"]["mota"] < 1
    parts = {n: _trackeval_hota(*rows[n], 30) for n in names}
    combined = trackeval.metrics.HOTA().combine_sequences(parts)
    for n in names:
        assert listed["sequences"][n]["HOTA"] == pytest.approx(float(np.mean(parts[n]["HOTA"])), abs=1e-9)
    for key in ("HOTA", "DetA", "AssA"):
        assert listed["metrics"][key] == pytest.approx(float(np.mean(combined[key])), abs=1e-9)
    table = listed["table"]
    assert "SEQ-A" in table and "OVERALL" in table and "motp (1 - IoU)" in table
