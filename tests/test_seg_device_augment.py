"""The on-device augmentation path (augment_on_device) against the CPU path, on CPU tensors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from bioloop.tasks.segmentation import device_augment as D
from bioloop.tasks.segmentation import transforms as T


def _cfg(spatial, intensity, shape, target_shape=None):
    info = SimpleNamespace(shape=shape)
    return SimpleNamespace(spatial_transforms=spatial, intensity_transforms=intensity, input_array_info=info,
                           target_array_info=None if target_shape is None else SimpleNamespace(shape=target_shape),
                           spatial_dims=2 if shape[0] == 1 else 3)


def _patch(rng, shape, classes=2):
    raw = rng.random(shape, dtype=np.float32)
    target = (rng.random((classes, *shape)) > 0.5).astype(np.float32)
    target[:, :, : shape[1] // 3] = np.nan  # an unannotated slab
    cost = rng.random((1, *shape), dtype=np.float32)
    return raw, target, cost


def _both(cfg, seeds, source_shape):
    """(cpu outputs, device outputs) for the same sample seeds; each a list of (raw, target, cost)."""
    out = tuple(cfg.input_array_info.shape)
    t_out = tuple((cfg.target_array_info or cfg.input_array_info).shape)
    cpu, batch = [], {"raw": [], "target": [], "cost": [], "augment": []}
    for seed in seeds:
        raw, target, cost = _patch(np.random.default_rng(1000 + seed), source_shape)
        rng = np.random.default_rng(seed)
        r, t, c = T.spatial_augment(raw, target, cfg.spatial_transforms, rng, cost=cost, out_shape=out,
                                    target_out_shape=t_out)
        if cfg.intensity_transforms:
            r = T.intensity_augment(r, cfg.intensity_transforms, rng)
        cpu.append((r, t, c))
        batch["augment"].append(D.draw(cfg, np.random.default_rng(seed), out, t_out))
        for key, value in (("raw", raw[None]), ("target", target), ("cost", cost)):
            batch[key].append(torch.from_numpy(value[:, 0] if cfg.spatial_dims == 2 else value))
    collated = {k: torch.stack(v) for k, v in batch.items() if k != "augment"}
    collated["augment"] = {k: torch.stack([a[k] for a in batch["augment"]]) for k in batch["augment"][0]}
    got = D.augment_batch(collated, cfg)
    device = []
    for b in range(len(seeds)):
        r, t, c = got["raw"][b, 0], got["target"][b], got["cost"][b]
        if cfg.spatial_dims == 2:
            r, t, c = r[None], t[:, None], c[:, None]
        device.append((r.numpy(), t.numpy(), c.numpy()))
    return cpu, device


@pytest.mark.parametrize("shape", [(8, 8, 8), (1, 16, 16)])
def test_mirror_transpose_and_intensity_match_the_cpu_path_sample_for_sample(shape):
    spatial = {"mirror": {"axes": {"z": 0.5, "y": 0.5, "x": 0.5}}, "transpose": {"axes": ["z", "y", "x"]}}
    intensity = {"brightness": {"range": [-0.2, 0.2], "p": 0.7}, "contrast": {"range": [0.5, 1.5]},
                 "gamma": {"range": [0.5, 2.0], "p": 0.5}}
    cfg = _cfg(spatial, intensity, shape)
    cpu, device = _both(cfg, range(24), shape)
    flipped = 0
    for (r, t, c), (r2, t2, c2) in zip(cpu, device):
        np.testing.assert_allclose(r2, r, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(t2, t)  # NaN where unannotated, in the same voxels
        np.testing.assert_array_equal(c2, c)
        flipped += not np.array_equal(np.isnan(t), np.isnan(cpu[0][1]))
    assert flipped > 0  # the draws did move the unannotated slab around


def test_rotation_matches_the_cpu_path_and_keeps_nan_outside():
    spatial = {"rotate": {"axes": {"z": [-180, 180], "x": [-30, 30]}}, "mirror": {"axes": {"x": 0.5}}}
    out = (6, 10, 10)
    margin = T.rotation_margin(out, spatial)
    source = tuple(n + 2 * m for n, m in zip(out, margin))
    cfg = _cfg(spatial, None, out)
    cpu, device = _both(cfg, range(12), source)
    mismatched = mismatched_cost = 0
    for (r, t, c), (r2, t2, c2) in zip(cpu, device):
        np.testing.assert_allclose(r2, r, atol=1e-4)  # trilinear grid_sample == ndimage order 1
        same = (t == t2) | (np.isnan(t) & np.isnan(t2))
        mismatched += (~same).sum()
        mismatched_cost += (c2 != c).sum()
        assert np.isnan(t2).any() and not np.isnan(t2).all()
    # nearest-neighbour ties may round differently
    assert mismatched / (12 * 2 * np.prod(out)) < 0.01 and mismatched_cost / (12 * np.prod(out)) < 0.01


def test_linear_target_interpolation_matches():
    spatial = {"rotate": {"axes": {"z": [-45, 45]}, "target_interpolation": "linear"}}
    out = (1, 12, 12)
    margin = T.rotation_margin(out, spatial)
    source = tuple(n + 2 * m for n, m in zip(out, margin))
    cfg = _cfg(spatial, None, out)
    cpu, device = _both(cfg, range(8), source)
    for (r, t, _), (r2, t2, _) in zip(cpu, device):
        np.testing.assert_allclose(r2, r, atol=1e-4)
        np.testing.assert_array_equal(np.isnan(t2), np.isnan(t))
        np.testing.assert_allclose(np.nan_to_num(t2), np.nan_to_num(t), atol=1e-4)


def test_noise_and_blur_have_the_cpu_distribution():
    shape = (16, 16, 16)
    base = np.random.default_rng(0).random(shape, dtype=np.float32)
    spec = {"noise": {"std": 0.1}}
    cfg = _cfg(None, spec, shape)
    cpu = [T.intensity_augment(base, spec, np.random.default_rng(s)) - base for s in range(8)]
    params = [D.draw_intensity(spec, np.random.default_rng(s)) for s in range(8)]
    raw = torch.from_numpy(np.stack([base[None]] * 8))
    got = D._intensity(raw, spec, torch.from_numpy(np.stack([p for p, _ in params])),
                       torch.from_numpy(np.stack([s for _, s in params]))).numpy()[:, 0] - base
    for a in (np.stack(cpu), got):  # 32768 normal draws: std within 2 %, mean within 0.002
        assert abs(a.std() - 0.1) < 0.002 and abs(a.mean()) < 0.002
    again = D._intensity(raw, spec, torch.from_numpy(np.stack([p for p, _ in params])),
                         torch.from_numpy(np.stack([s for _, s in params]))).numpy()[:, 0] - base
    np.testing.assert_array_equal(again, got)  # a pure function of the sample seeds
    for sigma in (0.7, 1.5):
        blurred = D._blur(torch.from_numpy(base)[None, None], sigma)[0, 0].numpy()
        np.testing.assert_allclose(blurred, ndimage.gaussian_filter(base, sigma, mode="reflect"), atol=1e-5)
    flat = np.random.default_rng(1).random((1, 9, 9), dtype=np.float32)
    blurred = D._blur(torch.from_numpy(flat)[None, None], 1.0)[0, 0].numpy()
    np.testing.assert_allclose(blurred, ndimage.gaussian_filter(flat, [0, 1.0, 1.0], mode="reflect"), atol=1e-5)
