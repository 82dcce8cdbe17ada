import numpy as np
import pytest

from bioloop.errors import DataError
from bioloop.tasks.segmentation.sampling import (
    PatchBuffer,
    WeightedCropChooser,
    class_fractions,
    class_weights_for_crops,
    foreground_offset,
    foreground_points,
    random_offset,
)


def test_class_fractions_skip_unannotated_classes():
    target = np.array([[[0, 1, 1, 0]], [[np.nan] * 4], [[1, np.nan, 0, 0]]], dtype=np.float32)
    assert class_fractions(target, ["a", "b", "c"]) == {"a": 0.5, "c": 1 / 3}


def test_class_weights_golden_rare_class_drawn_as_often_as_common():
    # class a fills two crops, class b a sliver of one: each class gets half the draws
    w = class_weights_for_crops([{"a": 0.5}, {"a": 0.5}, {"b": 0.01}], ["a", "b"])
    np.testing.assert_allclose(w, [0.25, 0.25, 0.5])
    # a crop holding both classes: A = 0.4, B = 0.1 -> w0 = 0.3/0.4 + 0.1/0.1 = 1.75, w1 = 0.25
    w = class_weights_for_crops([{"a": 0.3, "b": 0.1}, {"a": 0.1}], ["a", "b"])
    np.testing.assert_allclose(w, [0.875, 0.125])


def test_class_weights_ignore_unannotated_and_other_classes():
    w = class_weights_for_crops([{"a": 0.2, "b": float("nan"), "zzz": 9.0}, {"a": 0.2}, {}], ["a", "b"])
    np.testing.assert_allclose(w, [0.5, 0.5, 0.0])


def test_class_weights_uniform_mix_and_no_foreground():
    w = class_weights_for_crops([{"a": 1.0}, {"a": 0.0}], ["a"], uniform=0.2)
    np.testing.assert_allclose(w, [0.9, 0.1])
    np.testing.assert_allclose(class_weights_for_crops([{"a": 0.0}, {}], ["a"]), [0.5, 0.5])


@pytest.mark.parametrize("args, message", [
    (([], ["a"]), "no crops to weight"),
    (([{"a": -1.0}], ["a"]), "crop 0 has an invalid amount of class 'a'"),
    (([{"a": 1.0}], ["a"], 1.5), "uniform must lie in [0, 1]"),
])
def test_class_weights_errors(args, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        class_weights_for_crops(*args)


def test_chooser_is_deterministic_and_follows_probabilities():
    chooser = WeightedCropChooser([1.0, 0.0, 3.0])
    picks = [chooser(np.random.default_rng(s)) for s in range(4000)]
    assert picks == [chooser(np.random.default_rng(s)) for s in range(4000)]
    counts = np.bincount(picks, minlength=3) / len(picks)
    assert counts[1] == 0
    assert abs(counts[2] - 0.75) < 0.03
    assert len(chooser) == 3
    assert chooser.choose(np.random.default_rng(1)) == chooser(np.random.default_rng(1))


def test_chooser_balances_classes_end_to_end():
    fractions = [{"a": 0.5}, {"a": 0.5}, {"a": 0.5}, {"b": 0.02}]
    chooser = WeightedCropChooser(class_weights_for_crops(fractions, ["a", "b"]))
    rng = np.random.default_rng(0)
    picks = np.array([chooser(rng) for _ in range(6000)])
    assert abs((picks == 3).mean() - 0.5) < 0.03  # the rare class is seen half the time


@pytest.mark.parametrize("weights", [[0.0, 0.0], [1.0, -1.0], [], [np.nan]])
def test_chooser_rejects_bad_weights(weights):
    with pytest.raises(DataError, match="weights must be finite, >= 0 and not all 0"):
        WeightedCropChooser(weights)


def test_foreground_points_and_cap():
    mask = np.zeros((1, 4, 4), np.float32)
    mask[0, 1, 2] = mask[0, 3, 0] = 1
    mask[0, 0, 0] = np.nan
    np.testing.assert_array_equal(foreground_points(mask), [[0, 1, 2], [0, 3, 0]])
    assert len(foreground_points(np.ones((2, 8, 8)), max_points=5)) == 5


def test_foreground_offset_centres_patch_on_foreground():
    crop, patch = (1, 100, 100), (1, 10, 10)
    points = [None, np.array([[0, 50, 60]])]
    for seed in range(20):
        offset = foreground_offset(np.random.default_rng(seed), crop, patch, points, p=1.0)
        assert offset == (0, 45, 55)  # centre voxel (0, 50, 60) sits at patch position (0, 5, 5)
    # clamped inside the crop near its border
    assert foreground_offset(np.random.default_rng(0), crop, patch, [np.array([[0, 99, 1]])], p=1.0) == (0, 90, 0)


def test_foreground_offset_falls_back_to_uniform():
    crop, patch = (3, 40, 50), (1, 8, 8)
    for p, points in [(0.0, [np.array([[0, 5, 5]])]), (1.0, [None, np.zeros((0, 3), int)])]:
        a = foreground_offset(np.random.default_rng(7), crop, patch, points, p=p)
        rng = np.random.default_rng(7)
        if p == 0.0:
            rng.random()  # the p draw
        assert a == random_offset(rng, crop, patch)


def test_random_offset_when_crop_smaller_than_patch():
    assert random_offset(np.random.default_rng(0), (1, 4, 100), (1, 8, 8))[:2] == (0, 0)


def _draw(rng):
    return rng.integers(0, 10**9)


def test_patch_buffer_is_deterministic_across_instances():
    a, b = PatchBuffer(_draw, size=4, refresh_every=2), PatchBuffer(_draw, size=4, refresh_every=2)
    first = [a.get(i, 0, seed=42) for i in range(4)]
    assert first == [b.get(i, 0, seed=42) for i in reversed(range(4))][::-1]  # order of access does not matter
    assert len(set(first)) == 4
    assert [a.get(i, 0, seed=43) for i in range(4)] != first


def test_patch_buffer_refresh_timing_and_memory():
    buffer = PatchBuffer(_draw, size=3, refresh_every=2)
    epoch0 = [buffer.get(i, 0, 1) for i in range(6)]
    assert epoch0[:3] == epoch0[3:]  # index wraps onto the 3 slots
    assert buffer.draws == 3
    assert [buffer.get(i, 1, 1) for i in range(3)] == epoch0[:3]  # same round: no redraw
    assert buffer.draws == 3
    epoch2 = [buffer.get(i, 2, 1) for i in range(3)]
    assert buffer.draws == 6 and set(epoch2).isdisjoint(epoch0)
    assert len(buffer._slots) <= 3
    assert [buffer.round(e) for e in range(5)] == [0, 0, 1, 1, 2]
    # going back to an old round rebuilds it exactly (resume)
    assert [buffer.get(i, 1, 1) for i in range(3)] == epoch0[:3]


def test_patch_buffer_draws_lazily():
    buffer = PatchBuffer(_draw, size=100)
    buffer.get(5, 0, 0)
    assert buffer.draws == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 0}, "size \\(patches per buffer\\) must be a positive integer"),
    ({"size": 2, "refresh_every": 0}, "refresh_every \\(epoch_shuffle\\) must be a positive integer"),
])
def test_patch_buffer_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        PatchBuffer(_draw, **kwargs)
