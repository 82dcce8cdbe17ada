import json

import numpy as np
import pytest
import torch

from bioloop.errors import CheckpointError, ConfigError, DataError
from bioloop.tasks.segmentation.transforms import (
    AlbumentationsAdapter,
    Normalizer,
    apply_value_transform,
    check_intensity_transforms,
    check_spatial_transforms,
    check_value_transform,
    intensity_augment,
    rotation_margin,
    rotation_source_shape,
    spatial_augment,
)

CSC_DEFAULT = {"mirror": {"axes": {"x": 0.5, "y": 0.5}}, "transpose": {"axes": ["x", "y"]},
               "rotate": {"axes": {"x": [-180, 180], "y": [-180, 180]}}}


def _patch(shape=(1, 4, 4), channels=2):
    raw = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    target = np.stack([raw + 100 * c for c in range(channels)]).astype(np.float32)
    target[0, 0, 0, 0] = np.nan
    return raw, target, raw + 1000


# ---------------------------------------------------------------- spatial checks


def test_valid_spatial_specs_have_no_problems():
    assert check_spatial_transforms(CSC_DEFAULT) == []
    assert check_spatial_transforms(None) == []
    assert check_spatial_transforms({"rotate": {"axes": {"z": [-10, 10]}, "target_interpolation": "linear"}}) == []


@pytest.mark.parametrize("spec, message", [
    ({"mirorr": {"axes": {"x": 0.5}}}, "spatial_transforms: unknown transform 'mirorr' (did you mean 'mirror'?)"),
    ({"rotate": {"axis": {"z": [0, 90]}}}, "spatial_transforms.rotate: unknown key 'axis' (did you mean 'axes'?)"),
    ({"mirror": {"axes": {"w": 0.5}}}, "spatial_transforms.mirror.axes: unknown axis 'w'"),
    ({"mirror": {"axes": {"x": 1.5}}}, "spatial_transforms.mirror.axes: expected {axis: probability in [0, 1]}"),
    ({"transpose": {"axes": ["x"]}}, "spatial_transforms.transpose.axes: expected a list of at least two axes"),
    ({"rotate": {"axes": {"z": [90, -90]}}}, "spatial_transforms.rotate.axes.z: expected [lo, hi] numbers"),
    ({"rotate": {"axes": ["z"]}}, "spatial_transforms.rotate.axes: expected {axis: [min_degrees, max_degrees]}"),
    ({"rotate": {"axes": {"z": [0, 9]}, "target_interpolation": "neareast"}},
     "spatial_transforms.rotate.target_interpolation: unknown mode 'neareast' (did you mean 'nearest'?)"),
    ({"mirror": {}}, "spatial_transforms.mirror: missing 'axes'"),
    ({"mirror": 0.5}, "spatial_transforms.mirror: expected a dict of parameters"),
    (["mirror"], "spatial_transforms: expected a dict of transforms"),
])
def test_spatial_spec_problems(spec, message):
    problems = check_spatial_transforms(spec)
    assert len(problems) == 1 and problems[0].startswith(message), problems


# ---------------------------------------------------------------- mirror / transpose


def test_mirror_moves_raw_target_and_cost_together():
    raw, target, cost = _patch()
    r, t, c = spatial_augment(raw, target, {"mirror": {"axes": {"x": 1.0, "z": 1.0}}}, np.random.default_rng(0), cost)
    np.testing.assert_array_equal(r, raw[:, :, ::-1])  # z is singleton: never flipped
    np.testing.assert_array_equal(t, target[:, :, :, ::-1])
    np.testing.assert_array_equal(c, cost[:, :, ::-1])
    assert np.isnan(t[0, 0, 0, 3])
    r, _, _ = spatial_augment(raw, target, {"mirror": {"axes": {"x": 0.0}}}, np.random.default_rng(0))
    np.testing.assert_array_equal(r, raw)


def test_transpose_never_moves_singleton_z_and_swaps_equal_axes():
    raw, target, cost = _patch((1, 4, 4))
    seen = set()
    for seed in range(20):
        spec = {"transpose": {"axes": ["x", "y", "z"]}}
        r, t, c = spatial_augment(raw, target, spec, np.random.default_rng(seed), cost)
        assert r.shape == (1, 4, 4)
        transposed = np.array_equal(r, raw.transpose(0, 2, 1))
        assert transposed or np.array_equal(r, raw)
        np.testing.assert_array_equal(t, target.transpose(0, 1, 3, 2) if transposed else target)
        np.testing.assert_array_equal(c, cost.transpose(0, 2, 1) if transposed else cost)
        seen.add(transposed)
    assert seen == {True, False}


def test_transpose_only_within_equal_lengths():
    raw, target, _ = _patch((4, 4, 6))
    for seed in range(10):
        r, t, _ = spatial_augment(raw, target, {"transpose": {"axes": ["z", "y", "x"]}}, np.random.default_rng(seed))
        assert r.shape == (4, 4, 6)
        assert np.array_equal(r, raw) or np.array_equal(r, raw.transpose(1, 0, 2))


# ---------------------------------------------------------------- rotation


def test_rotation_by_90_degrees_golden():
    raw = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    target = np.stack([raw, (raw > 4).astype(np.float32)])
    spec = {"rotate": {"axes": {"z": [90, 90]}}}
    r, t, c = spatial_augment(raw, target, spec, np.random.default_rng(0), cost=raw * 2)
    expected = np.array([[[6, 3, 0], [7, 4, 1], [8, 5, 2]]], np.float32)  # +90 about z = np.rot90(k=-1)
    np.testing.assert_allclose(r, expected, atol=1e-5)
    np.testing.assert_array_equal(t[0], expected)
    np.testing.assert_array_equal(t[1], expected > 4)
    np.testing.assert_array_equal(c, expected * 2)


def test_rotation_skips_planes_with_a_singleton_axis():
    raw, target, _ = _patch((1, 4, 4))
    spec = {"rotate": {"axes": {"x": [30, 30], "y": [-45, -45]}}}
    r, t, _ = spatial_augment(raw, target, spec, np.random.default_rng(0))
    np.testing.assert_array_equal(r, raw)
    np.testing.assert_array_equal(t, target)
    assert rotation_margin((1, 32, 32), {"rotate": {"axes": {"x": [-180, 180], "y": [-180, 180]}}}) == (0, 0, 0)


def test_rotation_margin_golden():
    full = {"rotate": {"axes": {"z": [-180, 180]}}}
    assert rotation_source_shape((1, 32, 32), full) == (1, 46, 46)  # 31 * sqrt(2) = 43.8 -> 31 + 2 * 7
    assert rotation_margin((1, 32, 32), full) == (0, 7, 7)  # per side
    # 31 (cos 10 + sin 10) = 35.9 -> 31 + 2 * 3
    assert rotation_margin((1, 32, 32), {"rotate": {"axes": {"z": [-10, 10]}}}) == (0, 3, 3)
    # anisotropic: 7 x 40 nm by 31 x 8 nm rotated about x: diagonal 374 nm = 9.35 z voxels, 46.75 y voxels
    spec = {"rotate": {"axes": {"x": [-180, 180]}}}
    assert rotation_source_shape((8, 32, 32), spec, scale=(40, 8, 8)) == (12, 48, 32)
    # all three axes: never more than the box diagonal sqrt(7^2 + 15^2 + 15^2) = 22.3
    spec = {"rotate": {"axes": {"z": [-180, 180], "y": [-180, 180], "x": [-180, 180]}}}
    assert rotation_source_shape((8, 16, 16), spec) == (24, 24, 24)
    assert rotation_margin((8, 16, 16), spec) == (8, 4, 4)
    assert rotation_margin((8, 16, 16), {"mirror": {"axes": {"x": 0.5}}}) == (0, 0, 0)


@pytest.mark.parametrize("out, spec, scale", [
    ((1, 32, 32), {"rotate": {"axes": {"z": [-180, 180]}}}, None),
    ((5, 9, 13), {"rotate": {"axes": {"z": [-180, 180], "y": [-30, 30], "x": [-180, 180]}}}, None),
    ((6, 12, 12), {"rotate": {"axes": {"x": [-180, 180], "y": [-180, 180]}}}, (24, 8, 8)),
])
def test_rotation_with_margin_has_no_empty_corners(out, spec, scale):
    source = rotation_source_shape(out, spec, scale)
    rng = np.random.default_rng(0)
    for _ in range(30):
        raw = rng.random(source).astype(np.float32)
        r, t, c = spatial_augment(raw, (raw[None] > 0.5).astype(np.float32), spec, rng,
                                  cost=np.ones(source, np.float32), out_shape=out, scale=scale)
        assert r.shape == out and t.shape == (1, *out) and c.shape == out
        assert not np.isnan(t).any() and c.min() == 1


def test_rotation_without_margin_marks_corners_unannotated():
    raw = np.full((1, 16, 16), 7, np.uint8)
    r, t, c = spatial_augment(raw, np.ones((1, 1, 16, 16), np.float32), {"rotate": {"axes": {"z": [45, 45]}}},
                              np.random.default_rng(0), cost=np.ones((1, 16, 16), np.float32))
    assert r.dtype == np.uint8 and r[0, 8, 8] == 7
    assert np.isnan(t[0, 0, 0, 0]) and t[0, 0, 8, 8] == 1 and c[0, 0, 0] == 0


def test_concentric_raw_and_smaller_target_stay_aligned():
    # valid-convolution geometry: raw (1, 9, 9) source -> (1, 5, 5); target (1, 7, 7) -> (1, 3, 3), same centre
    raw = np.random.default_rng(0).random((1, 9, 9)).astype(np.float32)
    target = raw[None, :, 1:8, 1:8].copy()
    cost = target[0][None] * 10  # (1, z, y, x) cost with the target's geometry
    spec = {"rotate": {"axes": {"z": [90, 90]}}, "mirror": {"axes": {"x": 0.5, "y": 0.5}},
            "transpose": {"axes": ["x", "y"]}}
    for seed in range(12):
        r, t, c = spatial_augment(raw, target, spec, np.random.default_rng(seed), cost=cost,
                                  out_shape=(1, 5, 5), target_out_shape=(1, 3, 3))
        assert r.shape == (1, 5, 5) and t.shape == (1, 1, 3, 3) and c.shape == (1, 1, 3, 3)
        np.testing.assert_allclose(t[0], r[:, 1:4, 1:4], atol=1e-5)
        np.testing.assert_allclose(c, t * 10, atol=1e-5)


def test_linear_threshold_targets_stay_binary():
    rng = np.random.default_rng(3)
    target = (rng.random((1, 1, 20, 20)) > 0.5).astype(np.float32)
    _, t, _ = spatial_augment(np.zeros((1, 20, 20), np.float32), target,
                              {"rotate": {"axes": {"z": [30, 30]}, "target_interpolation": "linear_threshold"}}, rng)
    assert set(np.unique(t[np.isfinite(t)])) <= {0.0, 1.0} and np.isnan(t).any()


def test_centre_crop_without_rotation_and_too_small_source():
    raw, target, cost = _patch((1, 6, 6))
    r, t, c = spatial_augment(raw, target, {}, np.random.default_rng(0), cost, out_shape=(1, 2, 2))
    np.testing.assert_array_equal(r, raw[:, 2:4, 2:4])
    np.testing.assert_array_equal(t, target[:, :, 2:4, 2:4])
    with pytest.raises(DataError, match="the source raw patch is smaller than its output patch"):
        spatial_augment(raw, target, {}, np.random.default_rng(0), out_shape=(1, 8, 8))
    with pytest.raises(DataError, match="the source target patch is smaller than its output patch"):
        spatial_augment(raw, target, {}, np.random.default_rng(0), target_out_shape=(1, 7, 6))


# ---------------------------------------------------------------- intensity


@pytest.mark.parametrize("spec, message", [
    ({"nosie": {"std": 0.1}}, "intensity_transforms: unknown transform 'nosie' (did you mean 'noise'?)"),
    ({"noise": {"sd": 0.1}}, "intensity_transforms.noise: unknown key 'sd'"),
    ({"noise": {"std": -1}}, "intensity_transforms.noise.std: expected a number >= 0"),
    ({"gamma": {"range": [0, 2]}}, "intensity_transforms.gamma.range: expected [lo, hi] numbers, lo <= hi with lo > 0"),
    ({"contrast": {"range": [0.5, 1.5], "p": 2}}, "intensity_transforms.contrast.p: expected a probability"),
    ({"blur": {"sigma": [-1, 1]}}, "intensity_transforms.blur.sigma: expected [lo, hi] numbers"),
    ({"brightness": {}}, "intensity_transforms.brightness.range: expected [lo, hi] numbers"),
])
def test_intensity_spec_problems(spec, message):
    problems = check_intensity_transforms(spec)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_intensity_golden_values():
    x = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(intensity_augment(x, {"brightness": {"range": [0.1, 0.1]}}, rng), x + 0.1, rtol=1e-6)
    np.testing.assert_allclose(intensity_augment(x, {"contrast": {"range": [2, 2]}}, rng), [[[-0.5, 0.5, 1.5]]])
    np.testing.assert_allclose(intensity_augment(x, {"gamma": {"range": [2, 2]}}, rng), [[[0, 0.25, 1]]])
    # gamma works on the patch's own [min, max]: [1, 2, 3] -> [0, .5, 1]^2 * 2 + 1
    np.testing.assert_allclose(intensity_augment(x * 2 + 1, {"gamma": {"range": [2, 2]}}, rng), [[[1, 1.5, 3]]])
    np.testing.assert_array_equal(intensity_augment(x, {"noise": {"std": 1.0, "p": 0.0}}, rng), x)
    assert intensity_augment(x.astype(np.float64), {}, rng).dtype == np.float32


def test_blur_only_over_non_singleton_axes():
    from scipy.ndimage import gaussian_filter

    x = np.zeros((1, 7, 7), np.float32)
    x[0, 3, 3] = 1
    out = intensity_augment(x, {"blur": {"sigma": [1.0, 1.0]}}, np.random.default_rng(0))
    np.testing.assert_allclose(out[0], gaussian_filter(x[0], 1.0), atol=1e-7)


def test_noise_statistics_and_determinism():
    x = np.zeros((1, 200, 200), np.float32)
    a = intensity_augment(x, {"noise": {"std": 0.1}}, np.random.default_rng(5))
    assert abs(a.std() - 0.1) < 0.005
    np.testing.assert_array_equal(a, intensity_augment(x, {"noise": {"std": 0.1}}, np.random.default_rng(5)))


# ---------------------------------------------------------------- normalisation


def test_normalizer_dtype_and_none_golden():
    norm = Normalizer.parse("dtype")
    np.testing.assert_allclose(norm(np.array([0, 255, 51], np.uint8)), [0, 1, 0.2])
    np.testing.assert_allclose(norm(np.array([-128, 127], np.int8)), [0, 1])
    np.testing.assert_allclose(norm(np.array([65535], np.uint16)), [1])
    np.testing.assert_array_equal(norm(np.array([3.5, -2], np.float64)), [3.5, -2])
    out = Normalizer.parse("none")(np.array([0, 255], np.uint8))
    assert out.dtype == np.float32 and out.tolist() == [0, 255]


def test_normalizer_minmax_and_zscore_golden():
    minmax = Normalizer.parse({"mode": "minmax", "min": 10, "max": 20})
    np.testing.assert_allclose(minmax(np.array([10, 15, 20, 25], np.uint8)), [0, 0.5, 1, 1.5])
    clipped = Normalizer.parse({"mode": "minmax", "min": 10, "max": 20, "clip": True})
    np.testing.assert_allclose(clipped(np.array([5, 25])), [0, 1])
    zscore = Normalizer.parse({"mode": "zscore", "mean": 2, "std": 4})
    np.testing.assert_allclose(zscore(np.array([2, 6, -2])), [0, 1, -1])


def test_percentile_fit_freezes_statistics():
    norm = Normalizer.parse({"mode": "percentile", "low": 10, "high": 90})
    assert norm.needs_fit
    with pytest.raises(DataError, match="the 'percentile' statistics are not fitted yet"):
        norm(np.zeros(3))
    norm.fit([np.arange(0, 51, dtype=np.uint8), np.arange(51, 101, dtype=np.uint8)])
    assert not norm.needs_fit
    state = norm.state()
    assert state == {"mode": "percentile", "low": 10.0, "high": 90.0, "min": 10.0, "max": 90.0}
    json.dumps(state)
    np.testing.assert_allclose(norm(np.array([10, 50, 90])), [0, 0.5, 1])
    restored = Normalizer.from_state(json.loads(json.dumps(state)))
    assert restored == norm and not restored.needs_fit


def test_default_percentiles_and_zscore_fit():
    assert Normalizer.parse("percentile").state() == {"mode": "percentile", "low": 1.0, "high": 99.8}
    z = Normalizer.parse("zscore").fit([np.array([0.0, 2.0, 0.0, 2.0])])
    assert z.state() == {"mode": "zscore", "mean": 1.0, "std": 1.0}
    assert Normalizer.parse("dtype").fit([np.zeros(3)]).state() == {"mode": "dtype"}  # nothing to fit


class _FakeVolume:
    """Stands in for bioloop.data.ngff.Volume: only read() and spatial_shape are used by fit."""

    def __init__(self, data):
        self.data, self.spatial_shape, self.reads = data, data.shape, 0

    def read(self, start, shape, fill=0):
        self.reads += 1
        return self.data[tuple(slice(s, s + n) for s, n in zip(start, shape))]


def test_fit_samples_a_bounded_number_of_voxels_from_volumes():
    volume = _FakeVolume(np.arange(40 * 128 * 128, dtype=np.uint16).reshape(40, 128, 128) % 1000)
    norm = Normalizer.parse({"mode": "percentile", "low": 0, "high": 100}).fit([volume], max_voxels=100000, seed=1)
    assert volume.reads == 2  # two 16 x 64 x 64 blocks cover 100000 voxels
    assert 0 <= norm.params["min"] < 50 and 950 < norm.params["max"] <= 999
    again = Normalizer.parse({"mode": "percentile", "low": 0, "high": 100}).fit([volume], max_voxels=100000, seed=1)
    assert again == norm


def test_fit_on_constant_raw_is_an_error():
    with pytest.raises(DataError, match="the low and high percentiles of the training raw are equal"):
        Normalizer.parse("percentile").fit([np.ones(10)])
    with pytest.raises(DataError, match="the training raw is constant, so its std is 0"):
        Normalizer.parse("zscore").fit([np.ones(10)])
    with pytest.raises(DataError, match="no finite raw values"):
        Normalizer.parse("zscore").fit([np.full(3, np.nan)])


def test_from_state_accepts_legacy_strings_and_rejects_unfitted():
    assert Normalizer.from_state("dtype") == Normalizer("dtype")
    assert Normalizer.from_state("none").state() == {"mode": "none"}
    with pytest.raises(CheckpointError, match="the normalisation statistics are missing"):
        Normalizer.from_state({"mode": "percentile", "low": 1, "high": 99})
    with pytest.raises(CheckpointError, match="unknown mode"):
        Normalizer.from_state("bogus")


@pytest.mark.parametrize("value, message", [
    ("zscor", "cfg.py: normalization: unknown mode (did you mean 'zscore'?) (got 'zscor'); use one of"),
    (3, "cfg.py: normalization: expected a mode name or {'mode': ..., ...} (got 3)"),
    ({"min": 0}, "cfg.py: normalization: expected a mode name or {'mode': ..., ...}"),
    ({"mode": "minmax", "mn": 0, "max": 1},
     "cfg.py: normalization: unknown key 'mn' for mode 'minmax' (did you mean 'min'?)"),
    ({"mode": "minmax", "max": 1}, "cfg.py: normalization: mode 'minmax' needs 'min' and 'max'"),
    ({"mode": "minmax", "min": 2, "max": 1}, "cfg.py: normalization: 'max' must be greater than 'min'"),
    ({"mode": "minmax", "min": 0, "max": 1, "clip": 1}, "cfg.py: normalization.clip: expected True or False"),
    ({"mode": "zscore", "mean": "a", "std": 1}, "cfg.py: normalization.mean: expected a number"),
    ({"mode": "zscore", "mean": 0}, "cfg.py: normalization: give both 'mean' and 'std'"),
    ({"mode": "zscore", "mean": 0, "std": 0}, "cfg.py: normalization.std: expected a number > 0"),
    ({"mode": "percentile", "low": 50, "high": 40}, "cfg.py: normalization: expected 0 <= low < high <= 100"),
    ({"mode": "dtype", "min": 0}, "cfg.py: normalization: unknown key 'min' for mode 'dtype'; allowed: none"),
])
def test_normalization_setting_errors(value, message):
    with pytest.raises(ConfigError) as info:
        Normalizer.parse(value, "cfg.py: normalization")
    assert str(info.value).startswith(message), str(info.value)


# ---------------------------------------------------------------- value transforms


def test_numpy_callables_get_arrays_and_modules_get_tensors():
    seen = []

    def numpy_fn(x):
        seen.append(type(x))
        return np.clip(x, 0, 1)

    class TorchFn(torch.nn.Module):
        def forward(self, x):
            seen.append(type(x))
            return x * 2

    out = apply_value_transform([numpy_fn, TorchFn()], np.array([[-1.0, 0.25, 3.0]]),
                                where="train_raw_value_transforms")
    assert seen == [np.ndarray, torch.Tensor]
    np.testing.assert_allclose(out, [[0, 0.5, 2]])
    assert out.dtype == np.float32
    x = np.ones((1, 2, 2), np.float32)
    assert apply_value_transform(None, x) is x


def test_tensor_in_tensor_out():
    out = apply_value_transform(lambda a: a + 1, torch.zeros(1, 2, 2))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.sum() == 4


def test_torchvision_v2_transform():
    from torchvision.transforms import v2

    out = apply_value_transform(v2.Normalize(mean=[0.5], std=[0.25]), np.full((1, 2, 2), 1.0, np.float32))
    np.testing.assert_allclose(out, 2.0)


def test_value_transform_errors():
    x = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(DataError, match="target_value_transforms: a value transform changed the array shape"):
        apply_value_transform(lambda a: a[0], x, where="target_value_transforms")
    with pytest.raises(DataError, match="train_raw_value_transforms: .* failed on an array of shape"):
        apply_value_transform(lambda a: a.clamp(0, 1), x, where="train_raw_value_transforms")
    with pytest.raises(DataError, match="val_raw_value_transforms: expected a callable"):
        apply_value_transform([3], x, where="val_raw_value_transforms")
    assert check_value_transform([abs, "x"], "target_value_transforms") == [
        "target_value_transforms: expected a callable or a list of callables (got 'x')"]
    assert check_value_transform(None, "w") == []


# ---------------------------------------------------------------- albumentations


def _albumentations():
    import albumentations as A

    return A


def test_albumentations_flip_moves_raw_and_masks_identically_and_keeps_nan():
    A = _albumentations()
    raw, target, cost = _patch((1, 4, 4))
    r, t, c = AlbumentationsAdapter(A.HorizontalFlip(p=1.0))(raw, target, cost, np.random.default_rng(0))
    np.testing.assert_array_equal(r, raw[:, :, ::-1])
    np.testing.assert_array_equal(t, target[:, :, :, ::-1])
    np.testing.assert_array_equal(c, cost[:, :, ::-1])
    assert np.isnan(t[0, 0, 0, 3]) and np.isfinite(t[1]).all()


def test_albumentations_3d_patch_flips_every_slice_alike():
    A = _albumentations()
    raw, target, _ = _patch((3, 4, 5))
    r, t, c = AlbumentationsAdapter(A.Compose([A.HorizontalFlip(p=1.0)]))(raw, target, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(r, raw[:, :, ::-1])
    np.testing.assert_array_equal(t, target[..., ::-1])
    assert c is None


def test_albumentations_rotation_corners_become_unannotated_and_seeded():
    A = _albumentations()
    adapter = AlbumentationsAdapter(A.Rotate(limit=(30, 60), p=1.0))
    raw = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    target = np.ones((1, 1, 16, 16), np.float32)
    r1, t1, _ = adapter(raw, target, None, np.random.default_rng(9))
    r2, t2, _ = adapter(raw, target, None, np.random.default_rng(9))
    np.testing.assert_array_equal(r1, r2)
    assert np.isnan(t1[0, 0, 0, 0]) and t1[0, 0, 8, 8] == 1


def test_albumentations_errors():
    A = _albumentations()
    raw, target, _ = _patch((1, 8, 8))
    with pytest.raises(DataError, match="albumentations: the pipeline changed the patch shape"):
        AlbumentationsAdapter(A.CenterCrop(4, 4))(raw, target, rng=np.random.default_rng(0))
    r, t, _ = AlbumentationsAdapter(A.CenterCrop(4, 4), allow_resize=True)(raw, target, rng=np.random.default_rng(0))
    assert r.shape == (1, 4, 4) and t.shape == (2, 1, 4, 4)

    def boom(image, **kwargs):
        raise ValueError("boom")

    with pytest.raises(DataError, match="albumentations: the pipeline failed on a patch of shape \\(1, 8, 8\\): boom"):
        AlbumentationsAdapter(A.Lambda(image=boom))(raw, target, rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="albumentations: raw and target patches differ in shape"):
        AlbumentationsAdapter(A.HorizontalFlip())(raw, target[:, :, 1:-1, 1:-1], rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="needs the sample's rng"):
        AlbumentationsAdapter(A.HorizontalFlip())(raw, target)


def test_dtype_scaling_warns_when_the_raw_uses_a_sliver_of_its_dtype():
    norm = Normalizer.parse("dtype")
    narrow = np.arange(0, 256, dtype=np.uint16).reshape(4, 8, 8)  # 8-bit values in a uint16 image
    # 255 / 65535 = 0.39 % of the range: the model would see values in [0, 0.0039]
    assert norm.range_warning([narrow], np.uint16, "cfg.py: normalization") == (
        "cfg.py: normalization: the training raw (uint16) spans 0..255, 0.39% of its dtype's range, so 'dtype' "
        "scaling gives the model values in [0, 0.00389]; set normalization = {'mode': 'percentile'} (fitted on the "
        "training raw) or {'mode': 'minmax', 'min': ..., 'max': ...}")
    wide = narrow * 200  # 0..51000: 78 % of the range
    assert norm.range_warning([wide], np.uint16) is None
    assert norm.range_warning([np.arange(0, 256, dtype=np.uint8)], np.uint8) is None  # a full 8-bit image
    assert Normalizer.parse({"mode": "percentile"}).range_warning([narrow], np.uint16) is None  # rescales anyway
    assert norm.range_warning([narrow.astype(np.float32)], np.float32) is None  # floats are not scaled
