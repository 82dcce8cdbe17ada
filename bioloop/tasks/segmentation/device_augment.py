"""Augmentation of a whole batch on the training device (``augment_on_device = True``).

The dataset draws every random choice on the CPU from the sample's own seed, exactly as the CPU
path does (``transforms.draw_spatial`` for rotation/mirror/transpose, ``draw_intensity`` for the
intensity transforms), and ships the normalised, un-augmented patches grown by the rotation margin
together with those parameters (``sample["augment"]``). ``augment_batch`` then rotates (trilinear
``grid_sample``; nearest or NaN-aware linear for targets), mirrors, transposes and applies the
intensity transforms to the batch on whatever device it is on. Same parameters, so the same
distribution as the CPU path; the values differ only by floating-point detail (raw is rotated after
normalisation, so integer raw is not rounded to its dtype in between) and, for ``noise``, by the
random generator (torch's normal draws from a per-sample seed instead of numpy's).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from bioloop.tasks.segmentation.transforms import _uniform, draw_spatial


def draw_intensity(spec, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per transform of ``spec`` (in its order): ``[applied, value]`` and a noise seed, drawn in the
    order ``transforms.intensity_augment`` draws them (noise draws one seed instead of an array)."""
    params = np.zeros((len(spec or {}), 2), np.float64)
    seeds = np.zeros(len(spec or {}), np.int64)
    for k, (name, p) in enumerate((spec or {}).items()):
        if rng.random() >= p.get("p", 1.0):
            continue
        params[k, 0] = 1.0
        if name == "noise":
            params[k, 1] = float(p["std"])
            seeds[k] = int(rng.integers(2**62))
        elif name in ("brightness", "contrast", "gamma"):
            params[k, 1] = _uniform(rng, p["range"])
        elif name == "blur":
            params[k, 1] = _uniform(rng, p["sigma"])
    return params, seeds


def draw(cfg, rng, out_shape, t_out) -> dict[str, torch.Tensor]:
    """The parameters one sample carries to the device (``sample["augment"]``)."""
    matrix, flips, order = draw_spatial(cfg.spatial_transforms, rng, out_shape, t_out)
    params, seeds = draw_intensity(cfg.intensity_transforms, rng)
    flip = np.zeros(3, bool)
    flip[flips] = True
    return {"matrix": torch.from_numpy(np.eye(3) if matrix is None else matrix),
            "rotated": torch.tensor(matrix is not None), "flip": torch.from_numpy(flip),
            "order": torch.tensor(order, dtype=torch.int64), "intensity": torch.from_numpy(params),
            "seeds": torch.from_numpy(seeds)}


# ----------------------------------------------------------------------------- spatial


def _grid(matrix: torch.Tensor, source, out) -> torch.Tensor:
    """grid_sample grid (B, *out, 3) mapping output voxels to source voxels (as ndimage.affine_transform
    with the rotation about the centre of the centred ``out`` box)."""
    device = matrix.device
    m = matrix.to(torch.float64)
    src = torch.tensor(source, dtype=torch.float64, device=device)
    o = torch.tensor(out, dtype=torch.float64, device=device)
    centre = torch.div(src - o, 2, rounding_mode="floor") + (o - 1) / 2
    offset = centre - m @ ((o - 1) / 2)  # (B, 3)
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=device) for n in out], indexing="ij")
    points = torch.stack(axes, -1).reshape(-1, 3)  # (N, 3) z, y, x
    index = points @ m.transpose(1, 2) + offset[:, None, :]  # (B, N, 3)
    scale = torch.where(src > 1, 2 / (src - 1).clamp(min=1), torch.zeros_like(src))
    normal = torch.where(src > 1, index * scale - 1, torch.zeros_like(index))
    return normal.flip(-1).reshape(matrix.shape[0], *out, 3).to(torch.float32)  # x, y, z order


def _sample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)


def _centre(x: torch.Tensor, out) -> torch.Tensor:
    starts = [(s - o) // 2 for s, o in zip(x.shape[2:], out)]
    return x[(slice(None), slice(None), *(slice(a, a + o) for a, o in zip(starts, out)))]


def _rotate_target(t: torch.Tensor, grid, mode: str) -> torch.Tensor:
    valid = torch.isfinite(t)
    value = torch.where(valid, t, torch.zeros_like(t))
    if mode == "nearest":
        out = _sample(value, grid, "nearest")
        keep = _sample(valid.to(t.dtype), grid, "nearest") >= 0.5
        return torch.where(keep, out, torch.full_like(out, math.nan))
    v = _sample(value, grid, "bilinear")
    w = _sample(valid.to(t.dtype), grid, "bilinear")
    soft = torch.where(w >= 0.5, v / w.clamp(min=1e-6), torch.full_like(v, math.nan))
    if mode == "linear_threshold":
        soft = torch.where(torch.isnan(soft), soft, (soft >= 0.5).to(soft.dtype))
    return soft


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    for a in range(3):
        mask = flip[:, a]
        if bool(mask.any()):
            x = torch.where(mask.view(-1, *([1] * (x.ndim - 1))), x.flip(2 + a), x)
    return x


def _transpose(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    if bool((order == torch.arange(3, device=order.device)).all()):
        return x
    out = torch.empty_like(x)
    for perm in torch.unique(order, dim=0):
        rows = (order == perm).all(dim=1)
        out[rows] = x[rows].permute(0, 1, *(2 + int(p) for p in perm))
    return out


# ----------------------------------------------------------------------------- intensity


def _reflect_index(n: int, radius: int, device) -> torch.Tensor:
    """Indices of a symmetric ('reflect' in scipy: d c b a | a b c d) padding by ``radius``."""
    i = np.arange(-radius, n + radius)
    period = 2 * n
    i = np.mod(i, period)
    i = np.where(i >= n, period - 1 - i, i)
    return torch.from_numpy(i).to(device)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter(x, sigma, mode='reflect') over the non-singleton axes of (1, 1, z, y, x)."""
    radius = int(4.0 * sigma + 0.5)
    if sigma <= 1e-15 or radius == 0:
        return x
    k = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-0.5 * (k / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    for a in range(3):
        n = x.shape[2 + a]
        if n <= 1:
            continue
        padded = x.index_select(2 + a, _reflect_index(n, radius, x.device))
        shape = [1, 1, 1, 1, 1]
        shape[2 + a] = kernel.numel()
        x = F.conv3d(padded, kernel.view(shape))
    return x


def _intensity(raw: torch.Tensor, spec, params: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    if not spec:
        return raw
    params, seeds = params.cpu().numpy(), seeds.cpu().numpy()
    out = raw.clone()
    for k, name in enumerate(spec):
        on = params[:, k, 0] > 0
        if not on.any():
            continue
        value = torch.as_tensor(params[:, k, 1], dtype=raw.dtype, device=raw.device).view(-1, 1, 1, 1, 1)
        mask = torch.as_tensor(on, device=raw.device).view(-1, 1, 1, 1, 1)
        if name == "noise":
            for b in np.flatnonzero(on):
                g = torch.Generator(device=raw.device).manual_seed(int(seeds[b, k]))
                out[b] += float(params[b, k, 1]) * torch.randn(out[b].shape, generator=g, device=raw.device,
                                                               dtype=raw.dtype)
        elif name == "brightness":
            out = torch.where(mask, out + value, out)
        elif name == "contrast":
            mean = out.mean(dim=(1, 2, 3, 4), keepdim=True)
            out = torch.where(mask, mean + value * (out - mean), out)
        elif name == "gamma":
            low = out.amin(dim=(1, 2, 3, 4), keepdim=True)
            high = out.amax(dim=(1, 2, 3, 4), keepdim=True)
            span = high - low
            scaled = ((out - low) / span.clamp(min=1e-30)).clamp(min=0) ** value * span + low
            out = torch.where(mask & (span > 0), scaled, out)
        elif name == "blur":
            for b in np.flatnonzero(on):
                out[b:b + 1] = _blur(out[b:b + 1], float(params[b, k, 1]))
    return out


# ----------------------------------------------------------------------------- the batch


def augment_batch(batch: dict, cfg) -> dict:
    """Apply the spatial and intensity transforms a batch's ``augment`` parameters describe, on its device.

    ``raw`` (B, 1, *S) and ``target`` (B, C, *S) (and ``cost``) come grown by the rotation margin
    and leave at ``input_array_info.shape`` / the target shape; 2D batches have no z axis.
    """
    from bioloop.tasks.segmentation.data import target_info

    params = batch.pop("augment")
    two_d = cfg.spatial_dims == 2
    out_in = tuple(int(n) for n in cfg.input_array_info.shape)
    out_t = tuple(int(n) for n in target_info(cfg).shape)
    raw, target, cost = batch["raw"], batch["target"], batch.get("cost")
    if two_d:
        raw, target = raw.unsqueeze(2), target.unsqueeze(2)
        cost = None if cost is None else cost.unsqueeze(2)
    raw, target = raw.float(), target.float()
    device = raw.device
    matrix = params["matrix"].to(device)
    if bool(params["rotated"].any()):
        mode = (cfg.spatial_transforms or {}).get("rotate", {}).get("target_interpolation", "nearest")
        raw = _sample(raw, _grid(matrix, raw.shape[2:], out_in), "bilinear")
        grid = _grid(matrix, target.shape[2:], out_t)
        rotated = _rotate_target(target, grid, mode)
        cost = None if cost is None else _sample(cost.float(), grid, "nearest")
        target = rotated
    else:
        raw, target = _centre(raw, out_in), _centre(target, out_t)
        cost = None if cost is None else _centre(cost, out_t)
    flip, order = params["flip"].to(device), params["order"].to(device)
    raw, target = _transpose(_flip(raw, flip), order), _transpose(_flip(target, flip), order)
    cost = None if cost is None else _transpose(_flip(cost, flip), order)
    raw = _intensity(raw, cfg.intensity_transforms, params["intensity"], params["seeds"])
    if two_d:
        raw, target = raw.squeeze(2), target.squeeze(2)
        cost = None if cost is None else cost.squeeze(2)
    out = {**batch, "raw": raw.contiguous(), "target": target.contiguous()}
    if cost is not None:
        out["cost"] = cost.contiguous()
    return out
