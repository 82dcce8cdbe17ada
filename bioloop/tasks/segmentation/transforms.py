"""Augmentation and normalisation of segmentation patches: numpy arrays in, numpy arrays out.

Arrays are raw (z, y, x), target (C, z, y, x) with NaN = not annotated, and an optional cost
map ((1,) z, y, x) with the target's geometry. Spatial transforms move raw, targets and cost together; intensity transforms
touch normalised raw only. Every random choice comes from the ``rng`` (a numpy Generator) the
caller passes, so a patch is a pure function of its seed. Also here: ``AlbumentationsAdapter``,
user value transforms (``apply_value_transform``); the ``Normalizer`` checkpoints store lives in
``normalization`` and is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from bioloop.config.structure import did_you_mean
from bioloop.errors import DataError
from bioloop.tasks.segmentation.normalization import (  # re-exported: import them from here
    NORMALIZATION_KEYS as NORMALIZATION_KEYS,
    Normalizer as Normalizer,
)

AXES = ("z", "y", "x")
_AXIS = {"z": 0, "y": 1, "x": 2}
SPATIAL_KEYS = {"mirror": ("axes",), "transpose": ("axes",), "rotate": ("axes", "target_interpolation")}
INTENSITY_KEYS = {"noise": ("std", "p"), "contrast": ("range", "p"), "gamma": ("range", "p"),
                  "blur": ("sigma", "p"), "brightness": ("range", "p")}
_TARGET_INTERPOLATION = ("nearest", "linear", "linear_threshold")


# ---------------------------------------------------------------- checks


def _check_names(spec, known: Mapping[str, tuple], where: str) -> tuple[list[str], list[tuple[str, dict]]]:
    """Problems for unknown transform names / keys; returns the (name, params) pairs worth checking."""
    problems: list[str] = []
    valid: list[tuple[str, dict]] = []
    if not isinstance(spec, Mapping):
        return [f"{where}: expected a dict of transforms (got {spec!r})"], valid
    for name, params in spec.items():
        if name not in known:
            problems.append(f"{where}: unknown transform {name!r}{did_you_mean(name, known)}; "
                            f"available: {', '.join(known)}")
        elif not isinstance(params, Mapping):
            problems.append(f"{where}.{name}: expected a dict of parameters (got {params!r})")
        else:
            bad = [k for k in params if k not in known[name]]
            for key in bad:
                problems.append(f"{where}.{name}: unknown key {key!r}{did_you_mean(key, known[name])}; "
                                f"allowed: {', '.join(known[name])}")
            if not bad:
                valid.append((name, params))
    return problems, valid


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_range(value, where: str, low: float | None = None, strict: bool = False) -> list[str]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value)
    ok = ok and value[0] <= value[1] and (low is None or (value[0] > low if strict else value[0] >= low))
    if ok:
        return []
    bound = "" if low is None else f" with lo {'>' if strict else '>='} {low}"
    return [f"{where}: expected [lo, hi] numbers, lo <= hi{bound} (got {value!r})"]


def _check_p(params, where: str) -> list[str]:
    p = params.get("p", 1.0)
    return [] if _number(p) and 0 <= p <= 1 else [f"{where}.p: expected a probability in [0, 1] (got {p!r})"]


def check_spatial_transforms(spec, where: str = "spatial_transforms") -> list[str]:
    """Every problem in a spatial transform spec (None or {} means no augmentation)."""
    if not spec:
        return []
    problems, valid = _check_names(spec, SPATIAL_KEYS, where)
    for name, params in valid:
        axes, here = params.get("axes"), f"{where}.{name}.axes"
        if axes is None:
            problems.append(f"{where}.{name}: missing 'axes' (got {dict(params)!r})")
            continue
        names = list(axes) if isinstance(axes, (Mapping, list, tuple)) else []
        bad = [a for a in names if a not in AXES]
        if bad or not names:
            problems.append(f"{here}: unknown axis {bad[0] if bad else axes!r}; use 'z', 'y' or 'x'")
            continue
        probabilities = isinstance(axes, Mapping) and all(_number(p) and 0 <= p <= 1 for p in axes.values())
        if name == "mirror" and not probabilities:
            problems.append(f"{here}: expected {{axis: probability in [0, 1]}} (got {axes!r})")
        if name == "transpose" and (isinstance(axes, Mapping) or len(set(names)) < 2):
            problems.append(f"{here}: expected a list of at least two axes (got {axes!r})")
        if name == "rotate":
            if not isinstance(axes, Mapping):
                problems.append(f"{here}: expected {{axis: [min_degrees, max_degrees]}} (got {axes!r})")
            else:
                for axis, angles in axes.items():
                    problems += _check_range(angles, f"{here}.{axis}")
            mode = params.get("target_interpolation", "nearest")
            if mode not in _TARGET_INTERPOLATION:
                problems.append(f"{where}.rotate.target_interpolation: unknown mode {mode!r}"
                                f"{did_you_mean(mode, _TARGET_INTERPOLATION)}; "
                                f"use one of {', '.join(_TARGET_INTERPOLATION)}")
    return problems


def check_intensity_transforms(spec, where: str = "intensity_transforms") -> list[str]:
    """Every problem in an intensity transform spec (None or {} means none)."""
    if not spec:
        return []
    problems, valid = _check_names(spec, INTENSITY_KEYS, where)
    for name, params in valid:
        here = f"{where}.{name}"
        problems += _check_p(params, here)
        if name == "noise":
            std = params.get("std")
            if not (_number(std) and std >= 0):
                problems.append(f"{here}.std: expected a number >= 0 (got {std!r})")
        elif name == "blur":
            sigma = params.get("sigma")
            if not (_number(sigma) and sigma >= 0):
                problems += _check_range(sigma, f"{here}.sigma", low=0)
        else:
            problems += _check_range(params.get("range"), f"{here}.range", low=0 if name == "gamma" else None,
                                     strict=name == "gamma")
    return problems


# ---------------------------------------------------------------- spatial


def _rotation_planes(spec, shape) -> list[tuple[int, int, float, float]]:
    """(p, q, lo, hi) in degrees for every rotation whose plane has no singleton axis."""
    planes = []
    for axis, (lo, hi) in ((spec or {}).get("rotate", {}).get("axes", {}) or {}).items():
        p, q = (a for a in range(3) if a != _AXIS[axis])
        if shape[p] > 1 and shape[q] > 1:
            planes.append((p, q, float(lo), float(hi)))
    return planes


def _max_extent(alpha: float, beta: float, lo: float, hi: float) -> float:
    """max of alpha*|cos t| + beta*|sin t| over t in [lo, hi] degrees (exact)."""
    lo_r, hi_r = math.radians(lo), math.radians(hi)
    crit = math.atan2(beta, alpha)
    candidates = [lo_r, hi_r]
    for k in range(math.floor(lo_r / (math.pi / 2)) - 1, math.ceil(hi_r / (math.pi / 2)) + 2):
        candidates += [k * math.pi / 2, k * math.pi + crit, k * math.pi - crit]
    inside = [t for t in candidates if lo_r - 1e-12 <= t <= hi_r + 1e-12]
    return max(alpha * abs(math.cos(t)) + beta * abs(math.sin(t)) for t in inside)


def rotation_source_shape(shape, spec, scale=None) -> tuple[int, ...]:
    """Source box (z, y, x) to read so that any rotation the spec allows, centre-cropped to ``shape``,
    has no empty corners. Grows axes by an even number of voxels; ``scale`` (nm per voxel, z y x)
    for anisotropic voxels. Equals ``shape + 2 * rotation_margin(shape, spec, scale)``."""
    shape = tuple(int(s) for s in shape)
    scale = np.ones(3) if scale is None else np.asarray(scale, float)
    extent = np.array(shape, float) - 1  # distance between the outermost voxel centres
    diagonal = float(np.linalg.norm(extent * scale))  # no rotation moves a corner further (in nm)
    planes = _rotation_planes(spec, shape)
    for p, q, lo, hi in planes:
        ratio = scale[q] / scale[p]
        a, b = extent[p], extent[q]
        extent[p] = _max_extent(a, ratio * b, lo, hi)
        extent[q] = _max_extent(b, a / ratio, lo, hi)
    if len(planes) > 1:
        extent = np.minimum(extent, diagonal / scale)
    grow = [max(0, math.ceil((e - (s - 1)) / 2 - 1e-6)) for e, s in zip(extent, shape)]
    return tuple(s + 2 * g for s, g in zip(shape, grow))


def rotation_margin(shape, spec, scale=None) -> tuple[int, ...]:
    """Voxels to add on EACH side of every axis of a ``shape`` patch so rotations leave no empty
    corners (0 without rotation and along singleton axes); see ``rotation_source_shape``."""
    return tuple((n - s) // 2 for n, s in zip(rotation_source_shape(shape, spec, scale), shape))


def _rotation_matrix(planes, rng, scale) -> np.ndarray | None:
    """Voxel-space matrix mapping output offsets to source offsets, or None when every angle is 0."""
    matrix, turned = np.eye(3), False
    for p, q, lo, hi in planes:
        angle = math.radians(rng.uniform(lo, hi))
        if angle == 0:
            continue
        turned = True
        c, s = math.cos(angle), math.sin(angle)
        r = np.eye(3)
        r[p, p], r[p, q], r[q, p], r[q, q] = c, -s * scale[q] / scale[p], s * scale[p] / scale[q], c
        matrix = r @ matrix  # the first listed rotation acts first (rotation_margin grows in that order)
    return matrix if turned else None


def _resample(array, matrix, out_shape, order: int, cval: float) -> np.ndarray:
    """Rotate a (z, y, x) array about its centre into a centred ``out_shape`` box."""
    centre = np.array([(s - o) // 2 + (o - 1) / 2 for s, o in zip(array.shape, out_shape)])
    offset = centre - matrix @ ((np.array(out_shape) - 1) / 2)
    return ndimage.affine_transform(array, matrix, offset=offset, output_shape=out_shape, order=order,
                                    mode="constant", cval=cval, prefilter=False)


def _rotate_raw(raw, matrix, out_shape):
    """Linear resampling of raw; keeps the dtype (integers rounded and clipped)."""
    out = _resample(raw.astype(np.float32), matrix, out_shape, 1, 0.0)
    if np.issubdtype(raw.dtype, np.integer):
        info = np.iinfo(raw.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    return out.astype(raw.dtype, copy=False)


def _rotate_channel(t, matrix, out_shape, mode: str) -> np.ndarray:
    """One target channel: nearest keeps NaN; linear interpolates annotated voxels only."""
    if mode == "nearest":
        return _resample(t, matrix, out_shape, 0, np.nan)
    valid = np.isfinite(t)
    value = _resample(np.where(valid, t, 0).astype(np.float32), matrix, out_shape, 1, 0.0)
    weight = _resample(valid.astype(np.float32), matrix, out_shape, 1, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        soft = np.where(weight >= 0.5, value / np.maximum(weight, 1e-6), np.nan)
    if mode == "linear_threshold":
        soft = np.where(np.isnan(soft), np.nan, (soft >= 0.5).astype(np.float32))
    return soft.astype(np.float32)


def _centre_crop(array, out_shape):
    lead = array.ndim - len(out_shape)
    starts = [(s - o) // 2 for s, o in zip(array.shape[lead:], out_shape)]
    return array[(slice(None),) * lead + tuple(slice(a, a + o) for a, o in zip(starts, out_shape))]


def _per_channel(array, fn):
    """Apply ``fn`` to a (z, y, x) array or to every channel of a (K, z, y, x) one."""
    return fn(array) if array.ndim == 3 else np.stack([fn(a) for a in array])


def spatial_augment(raw, target, spec, rng, cost=None, out_shape=None, target_out_shape=None, scale=None):
    """Rotate, mirror and transpose raw (z, y, x), target (C, z, y, x) and cost ((1,) z, y, x) together.

    Raw and target may be boxes of different sizes sharing one centre (valid-convolution models);
    cost has the target's geometry. ``out_shape`` / ``target_out_shape`` (default: the given
    shapes; the target's defaults to ``out_shape`` when raw and target share a shape) are the
    centred boxes returned: read the sources grown by ``rotation_margin`` on each side so rotations
    have no empty corners. Voxels rotated in from outside a source are NaN in targets, 0 in cost
    and 0 in raw. Raw keeps its dtype (integers are rounded). Rotation skips planes with a singleton
    axis; mirror/transpose never move a singleton axis; transpose only swaps axes of equal length
    (in raw and target). ``scale`` (nm per voxel, z y x) makes rotations physical on anisotropic
    voxels. Rotations compose in the order the spec lists them. Returns ``(raw, target, cost)``.
    """
    same = tuple(raw.shape) == tuple(target.shape[1:])
    out_shape = tuple(raw.shape) if out_shape is None else tuple(int(s) for s in out_shape)
    if target_out_shape is None:
        target_out_shape = out_shape if same else tuple(target.shape[1:])
    t_out = tuple(int(s) for s in target_out_shape)
    for name, have, want in (("raw", raw.shape, out_shape), ("target", target.shape[1:], t_out)):
        if len(have) != 3 or len(want) != 3 or any(h < w for h, w in zip(have, want)):
            raise DataError.at("spatial_augment", f"the source {name} patch is smaller than its output patch",
                               got=(tuple(have), want),
                               fix="grow the source by rotation_margin(out_shape, spec) on each side")
    spec = spec or {}
    matrix, flips, order = draw_spatial(spec, rng, out_shape, t_out, scale)
    if matrix is not None:
        mode = spec["rotate"].get("target_interpolation", "nearest")
        raw = _rotate_raw(raw, matrix, out_shape)
        target = np.stack([_rotate_channel(t, matrix, t_out, mode) for t in target.astype(np.float32)])
        if cost is not None:
            cost = _per_channel(cost.astype(np.float32), lambda c: _resample(c, matrix, t_out, 0, 0.0))
    else:
        raw, target = _centre_crop(raw, out_shape), _centre_crop(target, t_out)
        cost = None if cost is None else _centre_crop(cost, t_out)
    for a in flips:
        raw, target = np.flip(raw, a), np.flip(target, a + 1)
        cost = None if cost is None else np.flip(cost, a + cost.ndim - 3)
    if order != [0, 1, 2]:
        raw, target = np.transpose(raw, order), np.transpose(target, [0] + [o + 1 for o in order])
        if cost is not None:
            cost = np.transpose(cost, order if cost.ndim == 3 else [0] + [o + 1 for o in order])
    return raw, target, cost


def draw_spatial(spec, rng, out_shape, t_out, scale=None) -> tuple[np.ndarray | None, list[int], list[int]]:
    """The random choices of ``spatial_augment``, in the order it makes them: the rotation matrix
    (None without rotation), the mirrored axes (0=z, 1=y, 2=x) and the axis order after transposing.
    The on-device path (``device_augment``) draws with this same function, so both paths see the same
    parameters for the same seed."""
    spec = spec or {}
    scale = np.ones(3) if scale is None else np.asarray(scale, float)
    flat = tuple(min(a, b) for a, b in zip(out_shape, t_out))  # an axis is singleton if it is in either box
    matrix = _rotation_matrix(_rotation_planes(spec, flat), rng, scale) if "rotate" in spec else None
    flips = []
    for axis, probability in spec.get("mirror", {}).get("axes", {}).items():
        a = _AXIS[axis]
        if rng.random() < probability and flat[a] > 1:
            flips.append(a)
    names = [n for n in spec.get("transpose", {}).get("axes", []) if flat[_AXIS[n]] > 1]
    order = list(range(3))
    for size in sorted({(out_shape[_AXIS[n]], t_out[_AXIS[n]]) for n in names}):
        group = sorted(_AXIS[n] for n in names if (out_shape[_AXIS[n]], t_out[_AXIS[n]]) == size)
        if len(group) > 1:  # only axes of equal length can swap places
            for a, b in zip(group, rng.permutation(group)):
                order[a] = int(b)
    return matrix, flips, order


# ---------------------------------------------------------------- intensity


def _uniform(rng, value) -> float:
    return float(value) if _number(value) else float(rng.uniform(value[0], value[1]))


def intensity_augment(raw: np.ndarray, spec, rng) -> np.ndarray:
    """Intensity augmentation of normalised float raw, in the order the spec lists the transforms.

    noise: + N(0, std); contrast: mean + f * (x - mean), f ~ U(range); brightness: + b, b ~ U(range);
    gamma: each patch is min-max scaled to [0, 1], raised to g ~ U(range), scaled back to its own
    [min, max] (so it works for any normalisation; constant patches are unchanged); blur: gaussian
    with sigma ~ U(sigma) voxels along the non-singleton axes. Each applies with probability ``p``
    (default 1). Returns float32.
    """
    out = np.asarray(raw, dtype=np.float32).copy()
    for name, params in (spec or {}).items():
        if rng.random() >= params.get("p", 1.0):
            continue
        if name == "noise":
            out += rng.normal(0.0, params["std"], out.shape).astype(np.float32)
        elif name == "brightness":
            out += np.float32(_uniform(rng, params["range"]))
        elif name == "contrast":
            mean = np.float32(out.mean())
            out = mean + np.float32(_uniform(rng, params["range"])) * (out - mean)
        elif name == "gamma":
            gamma = _uniform(rng, params["range"])
            low, high = float(out.min()), float(out.max())
            if high > low:
                out = ((out - low) / (high - low)) ** np.float32(gamma) * np.float32(high - low) + np.float32(low)
        elif name == "blur":
            sigma = _uniform(rng, params["sigma"])
            out = ndimage.gaussian_filter(out, [sigma if n > 1 else 0.0 for n in out.shape], mode="reflect")
    return out.astype(np.float32, copy=False)


# ---------------------------------------------------------------- albumentations


class AlbumentationsAdapter:
    """Apply an albumentations pipeline to a patch: raw (z, y, x), target (C, z, y, x), cost ((1,) z, y, x).

    2D patches (z = 1) go in as ``image``/``mask``; 3D patches as ``volume``/``mask3d`` so 2D transforms
    apply the same sampled parameters to every z slice. Targets, a validity mask (NaN -> 0) and the
    cost map travel as mask channels (nearest interpolation): voxels whose validity is lost (e.g.
    rotated in from outside) become NaN. The pipeline is seeded from ``rng`` on every call, so results
    are deterministic. Raw and target must share their spatial shape, which must not change unless
    ``allow_resize``. Call as ``adapter(raw, target, cost, rng)``; returns ``(raw, target, cost)``.
    """

    def __init__(self, pipeline, allow_resize: bool = False):
        from bioloop.data.albu import albumentations

        A = albumentations()
        if not isinstance(pipeline, A.BaseCompose):
            pipeline = A.Compose([pipeline])
        self.pipeline = pipeline
        self.allow_resize = allow_resize

    def __call__(self, raw, target, cost=None, rng=None):
        if rng is None:
            raise TypeError("AlbumentationsAdapter needs the sample's rng: adapter(raw, target, cost, rng)")
        if tuple(raw.shape) != tuple(target.shape[1:]):
            raise DataError.at("albumentations", "raw and target patches differ in shape",
                               got=(tuple(raw.shape), tuple(target.shape[1:])),
                               fix="albumentations needs equal input and output geometry "
                                   "(not valid-convolution models)")
        c = target.shape[0]
        cost_shape = None if cost is None else np.shape(cost)
        valid = np.isfinite(target)
        channels = [np.where(valid, target, 0).astype(np.float32), valid.astype(np.float32)]
        if cost is not None:
            channels.append(np.asarray(cost, np.float32).reshape((1, *raw.shape)))
        masks = np.moveaxis(np.concatenate(channels), 0, -1)  # (z, y, x, K)
        self.pipeline.set_random_seed(int(rng.integers(2**31)))
        image = np.asarray(raw, np.float32)
        try:
            if raw.shape[0] == 1:
                out = self.pipeline(image=image[0], mask=masks[0])
                new_raw, new_masks = out["image"][None], out["mask"][None]
            else:
                out = self.pipeline(volume=image, mask3d=masks)
                new_raw, new_masks = out["volume"], out["mask3d"]
        except Exception as exc:  # albumentations raises many types; say which setting failed
            raise DataError.at("albumentations", f"the pipeline failed on a patch of shape {tuple(raw.shape)}: {exc}",
                               fix="3D patches need transforms that accept 'volume' and 'mask3d' "
                                   "(albumentations 2 2D transforms do)") from exc
        new_raw = np.asarray(new_raw, np.float32).reshape(new_masks.shape[:3])
        if not self.allow_resize and new_raw.shape != tuple(raw.shape):
            raise DataError.at("albumentations", "the pipeline changed the patch shape",
                               got=(tuple(raw.shape), new_raw.shape),
                               fix="use size-preserving transforms or pass allow_resize=True")
        new_masks = np.moveaxis(np.asarray(new_masks, np.float32), -1, 0)
        new_target = np.where(new_masks[c:2 * c] >= 0.5, new_masks[:c], np.nan).astype(np.float32)
        new_cost = None if cost is None else new_masks[2 * c].reshape(cost_shape[:-3] + new_raw.shape)
        return new_raw, new_target, new_cost


# ---------------------------------------------------------------- value transforms


def _wants_tensor(fn) -> bool:
    import torch

    return isinstance(fn, torch.nn.Module) or type(fn).__module__.split(".")[0] == "torchvision"


def apply_value_transform(fn: Callable | Sequence[Callable] | None, array, where: str = "value transform"):
    """Apply a user value transform (or a list of them, in order) to ``array`` (numpy or a CPU torch
    tensor); returns float32 of the same kind (numpy in -> numpy out, tensor in -> tensor out).

    Rule: callables that are ``torch.nn.Module`` (torchvision v2 transforms, csc/cellmap-data
    transforms) or come from torchvision get a torch tensor; every other callable gets a numpy
    array. Either may return a tensor or an array of the same shape.
    """
    if fn is None:
        return array
    fns = list(fn) if isinstance(fn, (list, tuple)) else [fn]
    as_tensor = hasattr(array, "detach")
    out = np.asarray(array.detach().cpu() if as_tensor else array)
    for f in fns:
        if not callable(f):
            raise DataError.at(where, "expected a callable", got=f, fix="pass a function or a torchvision transform")
        try:
            if _wants_tensor(f):
                import torch

                result = f(torch.from_numpy(np.ascontiguousarray(out)))
            else:
                result = f(out)
        except Exception as exc:
            raise DataError.at(where, f"{f!r} failed on an array of shape {out.shape}: {exc}",
                               fix="check the transform accepts a "
                                   f"{'torch tensor' if _wants_tensor(f) else 'numpy array'}") from exc
        if hasattr(result, "detach"):
            result = result.detach().cpu().numpy()
        result = np.asarray(result, dtype=np.float32)
        if result.shape != out.shape:
            raise DataError.at(where, "a value transform changed the array shape", got=(out.shape, result.shape),
                               fix="value transforms must keep the shape; use spatial transforms to move voxels")
        out = result
    out = out.astype(np.float32, copy=False)
    if as_tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(out))
    return out


def check_value_transform(fn, where: str) -> list[str]:
    """Problems with a value-transform setting (None, a callable or a list of callables)."""
    if fn is None:
        return []
    fns = list(fn) if isinstance(fn, (list, tuple)) else [fn]
    return [f"{where}: expected a callable or a list of callables (got {f!r})" for f in fns if not callable(f)]
