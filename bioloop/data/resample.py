"""Present a volume on another voxel grid, reading only the source voxels each box needs.

``ResampledVolume(source, scale)`` has the read API of :class:`bioloop.data.ngff.Volume`. Its grid
keeps the physical start of the source: the first target voxel's *edge* sits on the first source
voxel's edge, so ``translation = source.translation - source.scale / 2 + scale / 2`` (OME-NGFF voxel
centres; this is also how ``ngff.pyramid_transforms`` places coarser levels). It spans
``floor(source extent / scale)`` voxels per axis.

Interpolation is separable per spatial axis: ``labels=True`` takes the nearest source voxel (ties go
to the lower index, so a 2x label downsample keeps voxels 0, 2, 4, ... as the ngff pyramid does) and
never blends ids; otherwise upsampling is linear and downsampling averages the source voxels each
target voxel covers (area weights, no aliasing). Integer images are rounded back to their dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bioloop.data.ngff import Volume
from bioloop.errors import DataError

_EPS = 1e-9


class ResampledVolume:
    """A read-only view of ``source`` at voxel size ``scale`` (nm per spatial axis)."""

    roi = Volume.roi
    world_to_voxel = Volume.world_to_voxel
    voxel_to_world = Volume.voxel_to_world
    read_world = Volume.read_world
    _full_box = Volume._full_box
    _filled_box = Volume._filled_box

    def __init__(self, source: Any, scale: Sequence[float] | float, *, labels: bool = False):
        n = len(source.spatial_dims)
        values = (float(scale),) * n if isinstance(scale, (int, float)) else tuple(float(v) for v in scale)
        if len(values) != n or not all(v > 0 and math.isfinite(v) for v in values):
            raise DataError.at(source.path, f"resampling needs {n} positive voxel sizes (nm)", got=values,
                               fix="give one voxel size per spatial axis")
        self.source = source
        self.labels = bool(labels) or np.dtype(source.dtype) == np.bool_
        self.scale = values
        self.translation = tuple(t - s / 2 + v / 2 for t, s, v in zip(source.translation, source.scale, values))
        self.spatial_shape = tuple(max(1, int(math.floor(m * s / v + 1e-6)))
                                   for m, s, v in zip(source.spatial_shape, source.scale, values))
        self.axes = tuple(source.axes)
        self.spatial_dims = tuple(source.spatial_dims)
        self.path = source.path

    def __repr__(self) -> str:
        kind = "nearest" if self.labels else "linear/area"
        return f"ResampledVolume({self.path!r}, {self.source.scale} -> {self.scale} nm, {kind})"

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.source.shape)
        for k, d in enumerate(self.spatial_dims):
            shape[d] = self.spatial_shape[k]
        return tuple(shape)

    @property
    def ndim(self) -> int:
        return len(self.source.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    @property
    def array(self) -> "_LazyArray":
        """Array-like: basic indexing (ints, unit-step slices) reads through :meth:`read`."""
        return _LazyArray(self)

    def read(self, start_vox: Sequence[int], shape_vox: Sequence[int], fill: float = 0) -> np.ndarray:
        """Read a box of target voxels; voxels outside ``spatial_shape`` come back as ``fill``."""
        start, shape, out = self._filled_box(start_vox, shape_vox, fill)
        src_start, src_shape, dst, plans = list(start), list(shape), [slice(None)] * len(shape), {}
        for k, d in enumerate(self.spatial_dims):
            lo, hi = max(start[d], 0), min(start[d] + shape[d], self.spatial_shape[k])
            if hi <= lo:
                return out
            dst[d] = slice(lo - start[d], hi - start[d])
            plan = self._plan(k, np.arange(lo, hi))
            src_start[d], src_shape[d] = plan[0], plan[1]
            plans[d] = plan[2]
        data = self.source.read(src_start, src_shape, fill)
        out[tuple(dst)] = self._apply(data, plans, out.dtype)
        return out

    def _plan(self, k: int, target: np.ndarray):
        """(source start, source size, weights (targets, sources) or nearest indices) along spatial axis k."""
        n, s_src, s_dst = self.source.spatial_shape[k], self.source.scale[k], self.scale[k]
        centre = (self.translation[k] + target * s_dst - self.source.translation[k]) / s_src
        if self.labels:
            index = np.clip(np.ceil(centre - 0.5 - _EPS), 0, n - 1).astype(np.int64)
            lo = int(index.min())
            return lo, int(index.max()) - lo + 1, index - lo
        factor = s_dst / s_src
        if factor > 1 + 1e-6:  # downsampling: average the covered part of each source voxel
            a, b = centre - factor / 2, centre + factor / 2
            lo = max(int(math.floor(a.min() + 0.5)), 0)
            hi = min(int(math.ceil(b.max() + 0.5)), n)
            edges = np.arange(lo, hi, dtype=np.float64)
            weights = np.clip(np.minimum(b[:, None], edges + 0.5) - np.maximum(a[:, None], edges - 0.5), 0, None)
        else:  # linear between the two nearest source voxel centres, clamped at the edges
            c = np.clip(centre, 0, n - 1)
            i0 = np.floor(c + _EPS).astype(np.int64)
            i0 = np.minimum(i0, n - 1)
            frac = np.clip(c - i0, 0, 1)
            lo, hi = int(i0.min()), min(int(i0.max()) + 2, n)
            weights = np.zeros((len(target), hi - lo))
            rows = np.arange(len(target))
            weights[rows, i0 - lo] += 1 - frac
            weights[rows, np.minimum(i0 + 1, n - 1) - lo] += frac
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), _EPS)
        return lo, weights.shape[1], weights

    def _apply(self, data: np.ndarray, plans: dict, dtype: np.dtype) -> np.ndarray:
        if self.labels:
            for d, index in plans.items():
                data = np.take(data, index, axis=d)
            return data
        work = np.float64 if data.dtype == np.float64 else np.float32
        data = data.astype(work, copy=False)
        for d, weights in plans.items():
            data = np.moveaxis(np.tensordot(weights.astype(work), data, axes=([1], [d])), 0, d)
        if dtype.kind in "biu":
            info = np.iinfo(dtype) if dtype.kind != "b" else None
            data = np.rint(data)
            if info is not None:
                data = np.clip(data, info.min, info.max)
        return data.astype(dtype, copy=False)


class _LazyArray:
    """``volume.array[...]`` for a resampled view: turns basic indexing into one ``read``."""

    def __init__(self, volume: ResampledVolume):
        self._volume = volume
        self.shape = volume.shape
        self.dtype = volume.dtype
        self.ndim = len(self.shape)

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        start, shape, squeeze = [], [], []
        for d, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, (int, np.integer)):
                k = int(k) + n if k < 0 else int(k)
                if not 0 <= k < n:
                    raise IndexError(f"index {k} is out of bounds for axis {d} with size {n}")
                start.append(k), shape.append(1), squeeze.append(d)
            elif isinstance(k, slice) and k.step in (None, 1):
                a, b, _ = k.indices(n)
                start.append(a), shape.append(max(b - a, 0))
            else:
                raise IndexError("resampled volumes support integers and unit-step slices only")
        if 0 in shape:
            return np.empty(shape, self.dtype)
        return self._volume.read(start, shape).squeeze(axis=tuple(squeeze))
