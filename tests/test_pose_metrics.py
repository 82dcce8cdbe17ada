"""Golden values for the pose metrics, computed by hand (see the comments)."""

import math

import numpy as np
import pytest

from bioloop.tasks.pose import metrics as M

NAN = np.nan
# 4 frames, 2 keypoints (nose, tail). Frame 1's tail is unlabeled, frame 2's nose is
# missed by the prediction, frame 3 has no labels at all.
TRUTH = np.array([[[0, 0], [10, 10]],
                  [[5, 5], [NAN, NAN]],
                  [[0, 0], [20, 0]],
                  [[NAN, NAN], [NAN, NAN]]], float)
PRED = np.array([[[3, 4], [10, 10]],     # errors 5, 0
                 [[5, 11], [1, 1]],      # error 6, (not scored)
                 [[NAN, NAN], [20, 8]],  # miss, error 8
                 [[1, 1], [2, 2]]], float)
NAMES = ["nose", "tail"]


def test_pixel_error_is_euclidean_and_nan_where_unscored_or_missed():
    d = M.pixel_error(PRED, TRUTH)
    np.testing.assert_array_equal(d, [[5, 0], [6, NAN], [NAN, 8], [NAN, NAN]])


def test_mean_pixel_error_per_keypoint_and_pooled():
    per_kp, overall = M.mean_pixel_error(PRED, TRUTH)
    np.testing.assert_allclose(per_kp, [5.5, 4.0])
    assert overall == pytest.approx(19 / 4)  # (5 + 0 + 6 + 8) / 4, not the mean of 5.5 and 4


def test_rmse_is_a_true_root_mean_square():
    per_kp, overall = M.rmse(PRED, TRUTH)
    np.testing.assert_allclose(per_kp, [math.sqrt(30.5), math.sqrt(32)])
    assert overall == pytest.approx(math.sqrt(125 / 4))
    assert overall > M.mean_pixel_error(PRED, TRUTH)[1]


def test_pck_counts_misses_as_failures_and_threshold_is_inclusive():
    per_kp, overall = M.pck(PRED, TRUTH, thresholds=(5, 10))
    np.testing.assert_allclose(per_kp, [[1 / 3, 1 / 2], [2 / 3, 1.0]])
    np.testing.assert_allclose(overall, [2 / 5, 4 / 5])


def test_pck_normalized_by_a_per_frame_scale():
    # normalized errors: frame 0 -> 0.5, 0; frame 1 -> 3; frame 2 -> miss, 8
    per_kp, overall = M.pck(PRED, TRUTH, thresholds=(0.5, 4), normalize=[10, 2, 1, 1])
    np.testing.assert_allclose(per_kp, [[1 / 3, 1 / 2], [2 / 3, 1 / 2]])
    np.testing.assert_allclose(overall, [2 / 5, 3 / 5])
    # a frame with no usable scale is not scored: frame 1 drops out
    per_kp, overall = M.pck(PRED, TRUTH, thresholds=(4,), normalize=[10, 0, 1, 1])
    np.testing.assert_allclose(per_kp, [[1 / 2, 1 / 2]])
    np.testing.assert_allclose(overall, [2 / 4])


SIGMAS = [0.5, 0.25]       # (2 sigma)^2 = 1 and 0.25
AREA = [12.5, 18, 32, 1]   # chosen so e = d^2 / (2 area (2 sigma)^2) is 1, 1, -, 4


def test_oks_golden():
    o = M.oks(PRED, TRUTH, SIGMAS, AREA)
    expected = [(math.exp(-1) + 1) / 2, math.exp(-1), (0 + math.exp(-4)) / 2, NAN]
    np.testing.assert_allclose(o, expected, rtol=1e-9)


def test_oks_map_single_animal_is_mean_fraction_over_thresholds():
    # OKS 0.684 passes 0.50..0.65 (4 of 10 thresholds); 0.368 and 0.009 pass none;
    # frame 3 has nothing to score -> AP = 1/3 at 4 thresholds, 0 elsewhere
    assert M.oks_map(PRED, TRUTH, SIGMAS, AREA) == pytest.approx(4 / 3 / 10)
    assert M.OKS_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_oks_map_multi_animal_greedy_by_confidence():
    # frame 0: truth g0 (0,0), g1 (100,100); predictions p2 (50,50) conf .95 (false
    # positive), p0 (0,0) conf .9 (OKS 1 with g0), p1 (100,101) conf .8 (OKS e^-0.5=0.607
    # with g1). Frame 1: one animal, no prediction. 3 true instances in all.
    truth = np.full((2, 2, 1, 2), NAN)
    truth[0, 0, 0], truth[0, 1, 0], truth[1, 0, 0] = (0, 0), (100, 100), (0, 0)
    pred = np.full((2, 3, 1, 2), NAN)
    pred[0, 0, 0], pred[0, 1, 0], pred[0, 2, 0] = (0, 0), (100, 101), (50, 50)
    scores = np.array([[0.9, 0.8, 0.95], [0.1, 0.1, 0.1]])
    area = np.ones((2, 2))
    # t <= 0.6: FP, TP, TP -> precision interpolated 2/3 up to recall 2/3 (67 of 101 points)
    # t >= 0.65: FP, TP, FP -> precision 1/2 up to recall 1/3 (34 of 101 points)
    expected = (3 * (67 / 101) * (2 / 3) + 7 * (34 / 101) * 0.5) / 10
    assert M.oks_map(pred, truth, [0.5], area, scores=scores) == pytest.approx(expected)


def test_bbox_area():
    np.testing.assert_allclose(M.bbox_area(TRUTH), [100, 0, 0, 0])


def test_summarize_names_every_scalar():
    out = M.summarize(PRED, TRUTH, NAMES, thresholds=(5, 10), sigmas=SIGMAS, area=AREA)
    assert out["pixel_error/mean"] == pytest.approx(4.75)
    assert out["pixel_error/nose"] == pytest.approx(5.5)
    assert out["pixel_error/tail"] == pytest.approx(4.0)
    assert out["rmse/mean"] == pytest.approx(math.sqrt(31.25))
    assert out["rmse/tail"] == pytest.approx(math.sqrt(32))
    assert out["pck@5/mean"] == pytest.approx(0.4)
    assert out["pck@10/nose"] == pytest.approx(2 / 3)
    assert out["missed/fraction"] == pytest.approx(1 / 5)
    assert out["oks_map"] == pytest.approx(4 / 30)
    assert all(isinstance(v, float) for v in out.values())


def test_summarize_flattens_an_animal_axis():
    pred4, truth4 = PRED.reshape(2, 2, 2, 2), TRUTH.reshape(2, 2, 2, 2)
    out = M.summarize(pred4, truth4, NAMES, sigmas=SIGMAS, area=np.reshape(AREA, (2, 2)))
    assert out["pixel_error/mean"] == pytest.approx(4.75)
    assert out["oks_map"] == pytest.approx(4 / 30)
    assert "oks_map" not in M.summarize(PRED, TRUTH, NAMES)


def test_nothing_to_score_gives_nan():
    truth = np.full((2, 2, 2), NAN)
    assert math.isnan(M.mean_pixel_error(PRED[:2], truth)[1])
    assert math.isnan(M.rmse(PRED[:2], truth)[1])
    assert math.isnan(M.oks_map(PRED[:2], truth, SIGMAS, [1, 1]))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        M.pixel_error(PRED, TRUTH[:2])
    with pytest.raises(ValueError, match="keypoint names"):
        M.summarize(PRED, TRUTH, ["nose"])
