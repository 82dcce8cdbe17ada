"""Instance matching and scores on tiny hand-made volumes (values checked by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bioloop.tasks.segmentation.instance_metrics import (adapted_rand, hausdorff_distance, instance_counts,
                                                         instance_scores, match_instances, pool_instance_counts,
                                                         pool_segmentation_counts, scores_from_instance_counts,
                                                         scores_from_segmentation_counts, segmentation_counts,
                                                         semantic_counts, semantic_scores, voi)

SCORES = ("precision", "recall", "f1", "rq", "sq", "mean_matched_iou", "pq", "normalized_hausdorff")


def _row(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32)[None, None, :]


def test_golden_match_and_scores():
    truth = _row([1, 1, 1, 1, 0, 2, 2, 0, 3, 3])
    pred = _row([5, 5, 5, 0, 0, 7, 7, 7, 0, 0])
    match = match_instances(truth, pred)
    # IoU(1, 5) = 3 / (4 + 3 - 3) = 3/4; IoU(2, 7) = 2 / (2 + 3 - 2) = 2/3; truth 3 has no partner
    assert match.pairs == [(1, 5), (2, 7)]
    np.testing.assert_allclose(match.matched_iou, [0.75, 2 / 3])
    np.testing.assert_allclose(match.iou, [[0.75, 0], [0, 2 / 3], [0, 0]])
    assert (match.tp, match.fp, match.fn) == (2, 0, 1)
    s = instance_scores(truth, pred, voxel_size=(8, 8, 8))
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(0.8)  # 2 * 2 / (3 + 2)
    assert s["sq"] == pytest.approx((0.75 + 2 / 3) / 2) == s["mean_matched_iou"]
    assert s["pq"] == pytest.approx(0.8 * (0.75 + 2 / 3) / 2)
    # each matched pair is one voxel (8 nm) apart at worst: 1.01 ** (-8 / (8 * sqrt 3)); the missed truth scores 0
    per_pair = 1.01 ** (-8 / (8 * math.sqrt(3)))
    assert s["normalized_hausdorff"] == pytest.approx(2 * per_pair / 3) == pytest.approx(0.66284776)
    assert (s["n_truth"], s["n_pred"], s["tp"], s["fp"], s["fn"]) == (3, 2, 2, 0, 1)


def test_matching_is_optimal_not_greedy():
    # A = x[0:10], B = x[10:14]; X = x[4:12], Y = x[0:4]
    # IoU(A, X) = 6/12 = 0.5, IoU(A, Y) = 4/10 = 0.4, IoU(B, X) = 2/10 = 0.2.
    # Greedy (A-X first) finds one match; the best assignment finds A-Y and B-X.
    truth = _row([1] * 10 + [2] * 4)
    pred = _row([9] * 4 + [4] * 8 + [0] * 2)
    match = match_instances(truth, pred, iou_threshold=0.1)
    assert sorted(match.pairs) == [(1, 9), (2, 4)]
    np.testing.assert_allclose(sorted(match.matched_iou), [0.2, 0.4])
    assert len(match_instances(truth, pred, iou_threshold=0.5).pairs) == 0  # IoU must exceed the threshold


def test_hausdorff_uses_world_units_on_anisotropic_voxels():
    truth = np.zeros((6, 3, 3), bool)
    truth[0:2, 1, 1] = True
    pred = np.zeros_like(truth)
    pred[2:4, 1, 1] = True  # two z voxels (2 x 40 nm) further
    assert hausdorff_distance(truth, pred, (40, 4, 4)) == pytest.approx(80.0)
    pred[3, 1, 2] = True  # a voxel 80 nm down and 4 nm across from the nearest truth voxel
    assert hausdorff_distance(truth, pred, (40, 4, 4)) == pytest.approx(math.hypot(80, 4))


def _three_objects() -> np.ndarray:
    truth = np.zeros((8, 24, 24), np.uint16)
    truth[1:7, 2:10, 2:10] = 1
    truth[1:7, 12:22, 2:10] = 2
    truth[1:7, 2:10, 12:22] = 3
    return truth


def _speckle(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pred = np.zeros(shape, np.uint32)
    flat = rng.choice(pred.size, size=400, replace=False)  # many fall inside the truth objects
    pred.ravel()[flat] = np.arange(1, 401)
    return pred


def test_speckle_never_beats_an_empty_prediction():
    truth = _three_objects()
    speckle = _speckle(truth.shape)
    assert np.count_nonzero(speckle[truth > 0]) > 50
    empty = np.zeros_like(speckle)
    s_speckle = instance_scores(truth, speckle, voxel_size=(8, 8, 8))
    s_empty = instance_scores(truth, empty, voxel_size=(8, 8, 8))
    for key in SCORES:
        assert s_speckle[key] <= s_empty[key], key
        assert s_speckle[key] == 0.0, key
    assert s_speckle["n_pred"] == 400 and s_speckle["fp"] == 400


def test_empty_truth_conventions():
    empty = np.zeros((8, 8, 8), np.uint32)
    perfect = instance_scores(empty, empty)
    assert all(perfect[k] == 1.0 for k in SCORES)
    worst = instance_scores(empty, _speckle((8, 8, 8)))
    assert all(worst[k] == 0.0 for k in SCORES)


def test_perfect_prediction_scores_one():
    truth = _three_objects()
    relabelled = np.where(truth > 0, truth.astype(np.uint32) + 100, 0)
    s = instance_scores(truth, relabelled, voxel_size=(8, 8, 8))
    assert all(s[k] == pytest.approx(1.0) for k in SCORES)


def test_pooling_sums_counts_over_crops():
    a = instance_counts(_row([1, 1, 0, 2]), _row([3, 3, 0, 0]), voxel_size=1)  # 1 match, 1 miss
    b = instance_counts(_row([0, 0, 0, 0]), _row([0, 5, 0, 0]), voxel_size=1)  # 1 false positive
    pooled = pool_instance_counts([a, b])
    assert (pooled["n_truth"], pooled["n_pred"], pooled["tp"], pooled["nhd_den"]) == (2, 2, 1, 3)
    s = scores_from_instance_counts(pooled)
    assert s["f1"] == pytest.approx(0.5) and s["precision"] == 0.5 and s["recall"] == 0.5
    assert s["normalized_hausdorff"] == pytest.approx(1 / 3)  # one perfect pair over 2 + 1 objects


def test_semantic_counts_and_scores():
    truth = np.array([1, 1, 1, 0, 0, 0], bool)
    pred = np.array([1, 1, 0, 1, 0, 0], bool)
    counts = semantic_counts(truth, pred)
    assert counts == {"tp": 2, "fp": 1, "fn": 1}
    s = semantic_scores(counts)
    assert s["iou"] == pytest.approx(0.5) and s["dice"] == pytest.approx(2 / 3)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert math.isnan(semantic_scores({"tp": 0, "fp": 0, "fn": 0})["iou"])


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="same shape"):
        match_instances(np.zeros((2, 2)), np.zeros((2, 3)))


# ----------------------------------------------------------------------------- VOI and adapted Rand


def test_voi_and_adapted_rand_golden_split():
    truth = _row([1, 1, 1, 1])
    pred = _row([1, 1, 2, 2])  # the one object cut in two halves
    v = voi(pred, truth)
    # H(pred | truth) = 1 bit (each half is a coin flip inside the object); H(truth | pred) = 0
    assert v == {"split": pytest.approx(1.0), "merge": pytest.approx(0.0)}
    assert voi(truth, pred) == {"split": pytest.approx(0.0), "merge": pytest.approx(1.0)}  # roles swap
    a = adapted_rand(pred, truth)
    # same-segment ordered pairs: both P = 2*2 + 2*2 - 4 = 4, truth T = 16 - 4 = 12, pred S = 4
    assert a == {"error": pytest.approx(0.5), "precision": pytest.approx(1.0), "recall": pytest.approx(1 / 3)}


def test_voi_golden_three_way():
    truth = _row([1, 1, 2, 2, 0, 0])
    pred = _row([3, 3, 3, 3, 3, 4])  # merges 1, 2 and most of the background
    # merge: H(truth | pred) = 5/6 * H(2/5, 2/5, 1/5) = 5/6 * (2 * 0.4 * log2(2.5) + 0.2 * log2(5))
    merge = 5 / 6 * (0.8 * math.log2(2.5) + 0.2 * math.log2(5))
    # split: H(pred | truth) = 2/6 * H(1/2, 1/2) for the background only
    assert voi(pred, truth) == {"split": pytest.approx(1 / 3), "merge": pytest.approx(merge)}
    # adapted Rand ignores truth 0: four voxels, all in pred 3; P = 16 - 4 = 12, T = 2 + 2 = 4, S = 12
    assert adapted_rand(pred, truth) == {"error": pytest.approx(1 - 8 / 16), "precision": pytest.approx(4 / 12),
                                         "recall": pytest.approx(1.0)}


def _dense_cases():
    rng = np.random.default_rng(7)
    truth = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 5, 0), 5, 1)[None].repeat(3, 0)  # 16 cells, 3 slices
    truth[:, :3, :] = 0  # background
    pred = truth.copy()
    pred[:, 5:10, 5:10] = 99  # a false split: part of a cell takes a new id
    pred[(pred == 3) | (pred == 7)] = 3  # a false merge of two cells
    pred[0, 12:, 12:] = 0  # a miss
    pred[2, :2, :] = 50  # a false positive in the background
    noisy = np.where(rng.random(truth.shape) < 0.05, rng.integers(0, 20, truth.shape), pred)  # speckle
    return [(truth, pred), (truth, noisy), (truth, np.zeros_like(truth)), (truth, np.ones_like(truth)),
            (rng.integers(0, 4, (5, 6, 7)), rng.integers(0, 9, (5, 6, 7)))]


@pytest.mark.parametrize("case", range(5))
def test_voi_and_adapted_rand_match_scikit_image(case):
    from skimage.metrics import adapted_rand_error, variation_of_information

    truth, pred = _dense_cases()[case]
    split, merge = variation_of_information(truth, pred)
    assert voi(pred, truth) == {"split": pytest.approx(split, abs=1e-12), "merge": pytest.approx(merge, abs=1e-12)}
    split, merge = variation_of_information(truth, pred, ignore_labels=(0,))
    assert voi(pred, truth, ignore_truth=(0,)) == {"split": pytest.approx(split, abs=1e-12),
                                                   "merge": pytest.approx(merge, abs=1e-12)}
    error, sk_precision, sk_recall = adapted_rand_error(truth, pred)
    ours = adapted_rand(pred, truth)
    # scikit-image returns precision and recall swapped against its docstring (its issue 6485)
    assert ours == {"error": pytest.approx(error, abs=1e-12), "precision": pytest.approx(sk_recall, abs=1e-12),
                    "recall": pytest.approx(sk_precision, abs=1e-12)}


def test_segmentation_counts_pool_exactly_over_crops():
    from skimage.metrics import adapted_rand_error, variation_of_information

    (truth_a, pred_a), (truth_b, pred_b) = _dense_cases()[0], _dense_cases()[1]
    pooled = scores_from_segmentation_counts(pool_segmentation_counts(
        [segmentation_counts(pred_a, truth_a, rand_ignore=()), segmentation_counts(pred_b, truth_b, rand_ignore=())]))
    # one volume holding both crops side by side, the second crop's ids shifted so no segment spans both
    truth = np.concatenate([truth_a, truth_b + 1000], axis=2)
    pred = np.concatenate([pred_a, pred_b + 1000], axis=2)
    split, merge = variation_of_information(truth, pred)
    assert pooled["voi_split"] == pytest.approx(split) and pooled["voi_merge"] == pytest.approx(merge)
    assert pooled["voi"] == pytest.approx(split + merge)
    assert pooled["arand_error"] == pytest.approx(adapted_rand_error(truth, pred, ignore_labels=())[0])


def test_segmentation_scores_of_empty_and_perfect_volumes():
    truth = _row([0, 0, 0])
    assert adapted_rand(_row([1, 2, 3]), truth) == {"error": 0.0, "precision": 1.0, "recall": 1.0}  # all ignored
    assert voi(_row([5, 5, 6]), _row([1, 1, 2])) == {"split": 0.0, "merge": 0.0}  # same partition, other ids
    assert adapted_rand(_row([5, 5, 6]), _row([1, 1, 2]))["error"] == 0.0
