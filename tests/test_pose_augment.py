"""Pose augmentation: keypoints follow the pixels, flips swap left/right names, lost points become NaN."""

import os

import numpy as np
import pytest

from bioloop.data.synthetic_pose import SKELETON_NAMES, flip_permutation as synthetic_flip
from bioloop.errors import ConfigError
from bioloop.tasks.pose.augment import (PoseAugmentation, build_augmentation, flip_permutation,
                                        infer_flip_pairs)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
A = pytest.importorskip("albumentations")

H, W = 64, 80


def _dot(x, y, sigma=1.5):
    yy, xx = np.mgrid[:H, :W]
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = np.rint(255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)))
    return img


def _centroid(channel):
    ch = channel.astype(float)
    m = ch > 0.3 * ch.max()
    y, x = (np.array(np.nonzero(m)) * ch[m]).sum(axis=1) / ch[m].sum()
    return x, y


def test_infer_flip_pairs_naming_styles():
    names = ["nose", "ear_left", "ear_right", "left_paw", "right_paw", "earL", "earR",
             "LeftHand", "RightHand", "hip_l", "hip_r", "tail", "LEFT_EYE", "RIGHT_EYE", "l_foot", "r_foot"]
    assert infer_flip_pairs(names) == [("ear_left", "ear_right"), ("left_paw", "right_paw"),
                                       ("earL", "earR"), ("LeftHand", "RightHand"), ("hip_l", "hip_r"),
                                       ("LEFT_EYE", "RIGHT_EYE"), ("l_foot", "r_foot")]
    assert infer_flip_pairs(["tail", "head", "leftover"]) == []
    np.testing.assert_array_equal(flip_permutation(SKELETON_NAMES, infer_flip_pairs(SKELETON_NAMES)),
                                  synthetic_flip(SKELETON_NAMES, [("ear_left", "ear_right"),
                                                                  ("paw_left", "paw_right")]))


@pytest.mark.parametrize("name", ["dlc", "dlc-lr", "dlc-top-down"])
def test_keypoint_stays_on_its_bright_dot(name):
    aug = build_augmentation(name, ["a", "b"])
    checked = 0
    for seed in range(8):
        kps = np.array([[30.4, 25.7], [52.0, 38.2]])
        for k in range(2):
            out, moved = aug(_dot(*kps[k]), kps, np.random.default_rng(seed))
            assert out.shape == (H, W, 3) and out.dtype == np.uint8
            if np.isnan(moved[k]).any():
                continue
            x, y = _centroid(out[..., 0])
            assert np.hypot(x - moved[k, 0], y - moved[k, 1]) < 1.0, (seed, k, (x, y), moved[k])
            checked += 1
    assert checked >= 12


def test_horizontal_flip_swaps_left_and_right_golden():
    names = ["nose", "ear_left", "ear_right"]
    aug = PoseAugmentation("flip", hflip=1.0, flip_index=flip_permutation(names, infer_flip_pairs(names)))
    kps = np.array([[[40.0, 10.0], [10.0, 20.0], [30.0, 20.0]]])  # (A=1, K=3, 2)
    img = _dot(10, 20)  # the dot is on ear_left
    out, moved = aug(img, kps, np.random.default_rng(0))
    # mirrored: x -> W - 1 - x; ear_left takes the place of the mirrored ear_right
    np.testing.assert_allclose(moved[0], [[39.0, 10.0], [49.0, 20.0], [69.0, 20.0]])
    x, y = _centroid(out[..., 0])
    assert abs(x - moved[0, 2, 0]) < 0.01 and abs(y - 20) < 0.01  # the old ear_left pixel is now ear_right


def test_dlc_lr_flips_about_half_the_time_and_swaps_names():
    names = list(SKELETON_NAMES)
    lr = build_augmentation("dlc-lr", names)
    np.testing.assert_array_equal(lr.flip_index, [0, 2, 1, 4, 3, 5, 6, 7])
    flips = sum(np.random.default_rng(s).random(2)[0] < 0.5 for s in range(40))
    assert 10 < flips < 30
    custom = build_augmentation("dlc-lr", names, flip_pairs=[("paw_left", "paw_right")])
    np.testing.assert_array_equal(custom.flip_index, [0, 1, 2, 4, 3, 5, 6, 7])
    assert build_augmentation("dlc", names).hflip == 0.0
    top = build_augmentation("dlc-top-down", names)
    assert top.hflip == 0.5 and top.vflip == 0.5


def test_vertical_and_both_flips_golden():
    names = ["l", "r"]
    both = PoseAugmentation("both", hflip=1.0, vflip=1.0, flip_index=[1, 0])
    kps = np.array([[5.0, 6.0], [20.0, 30.0]])
    _, moved = both(_dot(5, 6), kps, np.random.default_rng(0))
    np.testing.assert_allclose(moved, [[74.0, 57.0], [59.0, 33.0]])  # a 180 degree turn: no swap
    vert = PoseAugmentation("v", vflip=1.0, flip_index=[1, 0])
    _, moved = vert(_dot(5, 6), kps, np.random.default_rng(0))
    np.testing.assert_allclose(moved, [[20.0, 33.0], [5.0, 57.0]])  # a mirror: swapped


def test_points_pushed_out_become_nan_and_missing_stay_missing():
    shift = A.Compose([A.Affine(translate_px={"x": 30, "y": 0}, p=1.0)])
    aug = build_augmentation(shift, ["a", "b", "c"])
    kps = np.array([[10.0, 5.0], [60.0, 5.0], [np.nan, np.nan]])
    out, moved = aug(_dot(10, 5), kps, np.random.default_rng(0))
    np.testing.assert_allclose(moved[0], [40.0, 5.0], atol=1e-4)
    assert np.isnan(moved[1]).all() and np.isnan(moved[2]).all()
    assert out[5, 40, 0] > 200


def test_augmentation_is_deterministic_given_the_rng():
    aug = build_augmentation("dlc-top-down", ["ear_left", "ear_right"])
    img = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    kps = np.array([[20.0, 20.0], [40.0, 30.0]])
    a = aug(img, kps, np.random.default_rng(7))
    b = aug(img, kps, np.random.default_rng(7))
    c = aug(img, kps, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_default_is_identity_and_multi_animal_shapes():
    aug = build_augmentation("default", ["a"])
    img = _dot(3, 3)
    kps = np.array([[[3.0, 3.0]], [[np.nan, np.nan]]])
    out, moved = aug(img, kps, np.random.default_rng(0))
    assert aug.is_identity and out is img
    np.testing.assert_array_equal(moved, kps)
    out, moved = build_augmentation("dlc", ["a"])(img, kps, np.random.default_rng(1))
    assert moved.shape == (2, 1, 2) and np.isnan(moved[1]).all()


def test_user_compose_is_wrapped_with_keypoints():
    user = A.Compose([A.HorizontalFlip(p=1.0)])  # no keypoint_params: we add ours
    aug = build_augmentation(user, ["a"])
    _, moved = aug(_dot(10, 20), np.array([[10.0, 20.0]]), np.random.default_rng(0))
    np.testing.assert_allclose(moved, [[69.0, 20.0]])


def test_config_errors():
    with pytest.raises(ConfigError, match=r"training.imgaug: unknown augmentation pipeline "
                                          r"\(did you mean 'dlc-lr'\?\)"):
        build_augmentation("dlc_lr", ["a"])
    with pytest.raises(ConfigError, match="must be a pipeline name or an albumentations"):
        build_augmentation(42, ["a"])
    with pytest.raises(ConfigError, match=r"'ear_lft' is not a keypoint \(did you mean 'ear_left'\?\)"):
        build_augmentation("dlc-lr", ["ear_left", "ear_right"], flip_pairs=[("ear_lft", "ear_right")])
    with pytest.raises(ConfigError, match="in more than one pair"):
        build_augmentation("dlc-lr", ["a", "b", "c"], flip_pairs=[("a", "b"), ("b", "c")])
    with pytest.raises(ConfigError, match=r"each flip pair is \(left, right\)"):
        build_augmentation("dlc-lr", ["a", "b"], flip_pairs=[("a",)])
