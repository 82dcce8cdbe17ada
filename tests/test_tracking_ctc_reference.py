"""CTC measures (DET, TRA, LNK, CT, TF, BC(i), CCA, BIO(i)) against py-ctcmetrics on generated results.

The ground truth has moving cells, a division whose daughters live on, and a lineage with a
complete cell cycle (a track that starts and ends with a division). Every result below is written
as CTC folders and scored by both bioloop and py-ctcmetrics' ``evaluate_sequence``.
"""

from __future__ import annotations

import numpy as np
import pytest

from bioloop.tasks.tracking.metrics_ctc import CTC_MEASURES, ctc_scores

ctc_eval = pytest.importorskip("ctc_metrics.scripts.evaluate")

T, SHAPE, SIDE = 8, (64, 64), 6


def _track(parent, frames, pos):
    return (parent, {t: pos(t) for t in frames})


# label -> (parent, {frame: (row, col)})
GT = {
    1: _track(0, range(0, 8), lambda t: (2, 2 + 2 * t)),
    2: _track(0, range(0, 4), lambda t: (30, 10 + t)),
    3: _track(2, range(4, 8), lambda t: (22, 14 + t)),
    4: _track(2, range(4, 8), lambda t: (38, 18 + t)),
    5: _track(0, range(2, 7), lambda t: (52, 48 - 2 * t)),
    10: _track(0, range(0, 2), lambda t: (45, 2)),
    11: _track(10, range(2, 5), lambda t: (46, 10)),
    12: _track(10, range(2, 8), lambda t: (57, 2 + t)),
    13: _track(11, range(5, 8), lambda t: (44, 50)),
    14: _track(11, range(5, 8), lambda t: (12, 50)),
}


def _write(folder, spec, gt: bool, sizes=None, depth: int | None = None, slices=None):
    """CTC folder of ``spec``; 3D with ``depth`` z-slices (``slices[(label, t)] = (z0, z1)``, default all)."""
    import tifffile

    folder.mkdir(parents=True)
    shape = SHAPE if depth is None else (depth, *SHAPE)
    masks = [np.zeros(shape, np.uint16) for _ in range(T)]
    for lab, (_p, frames) in spec.items():
        assert sorted(frames) == list(range(min(frames), max(frames) + 1)), lab
        for t, (r, c) in frames.items():
            h, w = (sizes or {}).get((lab, t), (SIDE, SIDE))
            z = slice(*(slices or {}).get((lab, t), (0, depth))) if depth else ...
            assert not masks[t][z, r:r + h, c:c + w].any(), (lab, t)  # the generator never overlaps objects
            masks[t][z, r:r + h, c:c + w] = lab
    prefix, table = ("man_track", "man_track.txt") if gt else ("mask", "res_track.txt")
    for t, m in enumerate(masks):
        tifffile.imwrite(folder / f"{prefix}{t:03d}.tif", m, photometric="minisblack")
    with open(folder / table, "w") as f:
        for lab, (parent, frames) in sorted(spec.items()):
            f.write(f"{lab} {min(frames)} {max(frames)} {parent}\n")


def _relabel(spec, offset):
    return {lab + offset: (p + offset if p else 0, fr) for lab, (p, fr) in spec.items()}


def _shift(spec, dc):
    return {lab: (p, {t: (r, c + dc(lab)) for t, (r, c) in fr.items()}) for lab, (p, fr) in spec.items()}


def _case(name):
    gt = {k: (p, dict(f)) for k, (p, f) in GT.items()}
    sizes = None
    if name == "identical":
        res = _relabel(gt, 100)
    elif name == "false_positive_tracks":
        res = {**gt, 20: _track(0, range(1, 6), lambda t: (20, 40)), 21: _track(0, range(0, 2), lambda t: (12, 30))}
    elif name == "missed_tracks":
        res = {k: v for k, v in gt.items() if k not in (4, 5, 14)}
    elif name == "swap":
        a = {**{t: GT[1][1][t] for t in range(0, 4)}, **{t: GT[5][1][t] for t in range(4, 7)}}
        b = {**{t: GT[5][1][t] for t in range(2, 4)}, **{t: GT[1][1][t] for t in range(4, 8)}}
        res = {k: v for k, v in gt.items() if k not in (1, 5)} | {1: (0, a), 5: (0, b)}
    elif name == "split_object":
        # frame 5: one result object covers both daughters 3 and 4; daughter 4 is then two tracks
        res = {k: v for k, v in gt.items() if k != 4}
        res[3] = (2, {t: (22, 14 + t) for t in range(4, 8)})
        res[40] = (2, {4: GT[4][1][4]})
        res[41] = (0, {t: GT[4][1][t] for t in range(6, 8)})
        sizes = {(3, 5): (22, 8)}
    elif name == "late_division":
        res = dict(gt)
        res[2] = (0, {**GT[2][1], 4: GT[3][1][4]})
        res[3] = (2, {t: GT[3][1][t] for t in range(5, 8)})
        res[4] = (2, {t: GT[4][1][t] for t in range(5, 8)})
        res[50] = (0, {4: GT[4][1][4]})
    elif name == "missed_division":
        res = {k: v for k, v in gt.items() if k not in (2, 3)}
        res[2] = (0, {**GT[2][1], **GT[3][1]})
        res[4] = (0, GT[4][1])
    elif name == "false_division":
        res = dict(gt)
        res[1] = (0, {t: GT[1][1][t] for t in range(0, 4)})
        res[31] = (1, {t: GT[1][1][t] for t in range(4, 8)})
        res[32] = (1, {t: (14, 20 + t) for t in range(4, 8)})
    elif name == "shifted_masks":
        # 2 px: 4/6 of each GT cell covered (match); 3 px: exactly half (no match)
        res = _shift(gt, lambda lab: 3 if lab in (1, 12) else 2)
    elif name == "combined":
        res = {k: v for k, v in _shift(gt, lambda lab: 1).items() if k != 14}
        res[20] = _track(0, range(3, 8), lambda t: (20, 40))
        res[11] = (10, {t: GT[11][1][t] for t in range(2, 4)})
        res[13] = (0, GT[13][1])
    else:
        raise KeyError(name)
    return gt, res, sizes


CASES = ["identical", "false_positive_tracks", "missed_tracks", "swap", "split_object", "late_division",
         "missed_division", "false_division", "shifted_masks", "combined"]


@pytest.mark.parametrize("name", CASES)
def test_ctc_measures_equal_py_ctcmetrics(tmp_path, name):
    gt, res, sizes = _case(name)
    _write(tmp_path / "01_GT" / "TRA", gt, gt=True)
    _write(tmp_path / "01_RES", res, gt=False, sizes=sizes)
    ours = ctc_scores(tmp_path / "01_GT" / "TRA", tmp_path / "01_RES")
    ref = ctc_eval.evaluate_sequence(str(tmp_path / "01_RES"), str(tmp_path / "01_GT"),
                                     metrics=["DET", "TRA", "LNK", "CT", "TF", "BC(3)", "CCA"], threads=1)
    for key in CTC_MEASURES:
        if ref[key] is None:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    for key in ("NS", "FN", "FP", "ED", "EA", "EC"):
        assert ours[key] == ref[f"AOGM_{key}"], key
    assert ours["AOGM"] == pytest.approx(ref["AOGM"], abs=1e-12)


@pytest.mark.parametrize("name", ["swap", "combined"])
def test_ctc_measures_equal_py_ctcmetrics_in_3d(tmp_path, name):
    gt, res, sizes = _case(name)
    # 4 slices; result objects 3 and 12 cover only 2 of them (half: no match) or 3 (a match) in some frames
    slices = {**{(3, t): (0, 2) for t in (4, 5)}, **{(12, t): (1, 4) for t in range(2, 8)}}
    _write(tmp_path / "01_GT" / "TRA", gt, gt=True, depth=4)
    _write(tmp_path / "01_RES", res, gt=False, sizes=sizes, depth=4, slices=slices)
    ours = ctc_scores(tmp_path / "01_GT" / "TRA", tmp_path / "01_RES")
    ref = ctc_eval.evaluate_sequence(str(tmp_path / "01_RES"), str(tmp_path / "01_GT"),
                                     metrics=["DET", "TRA", "LNK", "CT", "TF", "BC(3)", "CCA"], threads=1)
    assert ours["FN"] == ref["AOGM_FN"] >= 2
    for key in CTC_MEASURES:
        assert (ours[key] is None and ref[key] is None) or ours[key] == pytest.approx(ref[key], abs=1e-12), key
