"""Which crop and where: class-balanced crop choice, foreground-centred patches, patch buffers.

Everything is a pure function of the numpy Generator (or seed) the caller passes, so the engine's
``(index, sample_seed)`` pairs keep runs reproducible and resumable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bioloop.errors import DataError


def class_fractions(target: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Foreground fraction of each annotated class of a crop target (C, ...); NaN-only classes are left out."""
    out = {}
    for name, channel in zip(classes, target):
        valid = np.isfinite(channel)
        if valid.any():
            out[name] = float((channel[valid] > 0).mean())
    return out


def class_weights_for_crops(crops_class_fractions: Sequence[Mapping[str, float]], classes: Sequence[str],
                            uniform: float = 0.0) -> np.ndarray:
    """Probability of drawing each crop so that every class present is drawn equally often.

    ``crops_class_fractions[i][c]`` is how much of class ``c`` crop ``i`` holds (a foreground
    fraction or a voxel count; missing or NaN = not annotated). Crop ``i`` gets
    ``sum_c a_ic / sum_j a_jc`` over the classes with any foreground: picking a crop this way is
    picking a class uniformly, then a crop in proportion to its share of that class, i.e. each crop is
    weighted by the inverse frequency of the classes it contains. (csc weights a crop by
    ``sum_c a_ic * (1 - A_c / sum A)``, which still favours common classes when they dominate many
    crops.) ``uniform`` mixes in that much of the uniform distribution so background-only crops are
    still seen. Returns probabilities summing to 1; uniform when no crop has any foreground.
    """
    n = len(crops_class_fractions)
    if n == 0:
        raise DataError.at("class_weights_for_crops", "no crops to weight", got=[], fix="give at least one crop")
    if not 0 <= uniform <= 1:
        raise DataError.at("class_weights_for_crops", "uniform must lie in [0, 1]", got=uniform,
                           fix="use e.g. 0.1 to see background-only crops 10% of the time")
    amounts = np.zeros((n, len(classes)))
    for i, fractions in enumerate(crops_class_fractions):
        for c, name in enumerate(classes):
            value = fractions.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue  # not annotated
            if not math.isfinite(value) or value < 0:
                raise DataError.at("class_weights_for_crops", f"crop {i} has an invalid amount of class {name!r}",
                                   got=value, fix="pass foreground fractions or voxel counts (>= 0)")
            amounts[i, c] = value
    totals = amounts.sum(axis=0)
    present = totals > 0
    if not present.any():
        return np.full(n, 1.0 / n)
    weights = (amounts[:, present] / totals[present]).sum(axis=1)
    weights = weights / weights.sum()
    return (1 - uniform) * weights + uniform / n


class WeightedCropChooser:
    """Draw a crop index from fixed probabilities (e.g. ``class_weights_for_crops``)."""

    def __init__(self, weights: Sequence[float]):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0 or not np.all(np.isfinite(weights)) or np.any(weights < 0) \
                or weights.sum() <= 0:
            raise DataError.at("WeightedCropChooser", "weights must be finite, >= 0 and not all 0",
                               got=weights.tolist(),
                               fix="use class_weights_for_crops(...)")
        self.probabilities = weights / weights.sum()
        self._cumulative = np.cumsum(self.probabilities)

    def __len__(self) -> int:
        return len(self.probabilities)

    def choose(self, rng: np.random.Generator) -> int:
        """One crop index; uses exactly one ``rng.random()`` draw."""
        index = int(np.searchsorted(self._cumulative, rng.random() * self._cumulative[-1], side="right"))
        return min(index, len(self.probabilities) - 1)

    __call__ = choose


def foreground_points(mask: np.ndarray, max_points: int = 4096, seed: int = 0) -> np.ndarray:
    """Voxel coordinates (N, ndim) of ``mask > 0`` (NaN is not foreground), at most ``max_points`` kept
    at random; compute once per crop and class, then pass to ``foreground_offset``."""
    points = np.argwhere(np.nan_to_num(np.asarray(mask, dtype=np.float32)) > 0)
    if len(points) > max_points:
        keep = np.random.default_rng(seed).choice(len(points), max_points, replace=False)
        points = points[np.sort(keep)]
    return points.astype(np.int64)


def random_offset(rng: np.random.Generator, crop_shape, patch_shape) -> tuple[int, ...]:
    """Uniform patch start inside a crop (0 along axes where the crop is smaller than the patch)."""
    return tuple(int(rng.integers(0, max(1, c - s + 1))) for c, s in zip(crop_shape, patch_shape))


def foreground_offset(rng: np.random.Generator, crop_shape, patch_shape,
                      points: Sequence[np.ndarray | None], p: float) -> tuple[int, ...]:
    """Patch start whose centre lies on annotated foreground with probability ``p``.

    ``points[c]`` are the foreground voxels of class ``c`` (``foreground_points``; None or empty when
    the crop has none). With probability ``p`` a class with foreground is picked uniformly (class
    balance), then one of its voxels, and the patch is centred there (clamped inside the crop);
    otherwise the start is uniform as in ``random_offset``.
    """
    candidates = [pts for pts in points if pts is not None and len(pts)]
    if candidates and rng.random() < p:
        pts = candidates[int(rng.integers(len(candidates)))]
        centre = pts[int(rng.integers(len(pts)))]
        return tuple(int(min(max(0, int(v) - s // 2), max(0, c - s)))
                     for v, c, s in zip(centre, crop_shape, patch_shape))
    return random_offset(rng, crop_shape, patch_shape)


class PatchBuffer:
    """A pool of ``size`` pre-cut samples, redrawn every ``refresh_every`` epochs (Allen's PatchPerBuffer /
    epoch_shuffle).

    Slot ``k`` of refresh round ``r = epoch // refresh_every`` is ``draw_fn(default_rng([seed, r, k]))``,
    so the pool depends only on (seed, round) whatever the DataLoader workers. Slots are drawn lazily
    on first use and the pool is dropped when the round changes: memory is at most ``size`` samples
    per process. Samples are stored as drawn (augment after ``get`` for fresh augmentation each time).
    """

    def __init__(self, draw_fn: Callable[[np.random.Generator], Any], size: int, refresh_every: int = 1):
        if not isinstance(size, int) or size < 1:
            raise DataError.at("PatchBuffer", "size (patches per buffer) must be a positive integer", got=size,
                               fix="set patches_per_buffer to e.g. patches per crop x number of crops")
        if not isinstance(refresh_every, int) or refresh_every < 1:
            raise DataError.at("PatchBuffer", "refresh_every (epoch_shuffle) must be a positive integer",
                               got=refresh_every, fix="use 1 to redraw the buffer every epoch")
        self.draw_fn = draw_fn
        self.size = size
        self.refresh_every = refresh_every
        self._key: tuple[int, int] | None = None
        self._slots: dict[int, Any] = {}
        self.draws = 0  # samples drawn so far (for tests and logging)

    def __len__(self) -> int:
        return self.size

    def round(self, epoch: int) -> int:
        """The refresh round an epoch belongs to."""
        return epoch // self.refresh_every

    def get(self, index_in_epoch: int, epoch: int, seed: int):
        """The sample in slot ``index_in_epoch % size`` of the buffer that serves ``epoch``."""
        key = (int(seed), self.round(epoch))
        if key != self._key:
            self._key, self._slots = key, {}
        slot = index_in_epoch % self.size
        if slot not in self._slots:
            self._slots[slot] = self.draw_fn(np.random.default_rng([key[0], key[1], slot]))
            self.draws += 1
        return self._slots[slot]
