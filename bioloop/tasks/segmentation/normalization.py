"""Raw intensity normalisation: the ``Normalizer`` that checkpoints store so predict scales like training.

Re-exported by ``bioloop.tasks.segmentation.transforms``.

The default stays ``dtype`` (integers to [0, 1] by the dtype's range: the same image always maps to the
same values, whatever crop a run trains on). Images that use a sliver of their dtype, such as a uint16
microscope image holding 8-bit values, would then reach the model as values near 0; training says so
in one line (:meth:`Normalizer.range_warning`, below 5 % of the range) and names the fix: 'percentile'
(fitted on the training raw) or explicit 'minmax'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from bioloop.config.structure import did_you_mean
from bioloop.errors import DataError

__all__ = ["NORMALIZATION_KEYS", "Normalizer"]

NORMALIZATION_KEYS = {"dtype": (), "none": (), "minmax": ("min", "max", "clip"), "zscore": ("mean", "std"),
                      "percentile": ("low", "high", "clip", "min", "max")}
_FIT_BLOCK = (16, 64, 64)
NARROW_RANGE = 0.05  # 'dtype' scaling warns when the training raw spans less of its dtype's range


class Normalizer:
    """Raw intensity scaling, stored in checkpoints as ``state()`` so predict scales identically.

    Modes: ``dtype`` (integers -> [0, 1] by the dtype's range, floats unchanged), ``none`` (cast only),
    ``minmax`` {'min', 'max'[, 'clip']} -> (x - min) / (max - min), ``zscore`` {'mean', 'std'} ->
    (x - mean) / std (fitted on the training raw when omitted), ``percentile`` {'low': 1, 'high': 99.8
    [, 'clip']} -> minmax between those percentiles of the training raw, fitted once by ``fit`` and
    frozen as explicit 'min'/'max'. ``clip`` clips the result to [0, 1].
    """

    def __init__(self, mode: str = "dtype", **params: Any):
        self.mode = mode
        self.params = dict(params)
        if mode == "percentile":
            self.params = {"low": 1.0, "high": 99.8, **self.params}

    @classmethod
    def parse(cls, value, where: str = "normalization") -> Normalizer:
        """A Normalizer from a setting: a mode name or {'mode': name, ...}; ConfigError naming ``where``."""
        from bioloop.errors import ConfigError

        if isinstance(value, str):
            value = {"mode": value}
        if not isinstance(value, Mapping) or "mode" not in value:
            raise ConfigError.at(where, "expected a mode name or {'mode': ..., ...}", got=value,
                                 fix=f"use one of {', '.join(NORMALIZATION_KEYS)}, "
                                     "e.g. {'mode': 'percentile', 'low': 1, 'high': 99.8}")
        mode, params = value["mode"], {k: v for k, v in value.items() if k != "mode"}
        if mode not in NORMALIZATION_KEYS:
            raise ConfigError.at(where, f"unknown mode{did_you_mean(mode, NORMALIZATION_KEYS)}", got=mode,
                                 fix=f"use one of {', '.join(NORMALIZATION_KEYS)}")
        allowed = NORMALIZATION_KEYS[mode]
        problems = [f"{where}: unknown key {k!r} for mode {mode!r}{did_you_mean(k, allowed)}; "
                    f"allowed: {', '.join(allowed) or 'none'}" for k in params if k not in allowed]
        problems = problems or _check_norm_values(mode, params, where)
        if problems:
            raise ConfigError.many(problems)
        return cls(mode, **params)

    @classmethod
    def from_state(cls, state) -> Normalizer:
        """Rebuild from ``state()`` or a legacy checkpoint string ('dtype', 'none')."""
        from bioloop.errors import CheckpointError, ConfigError

        try:
            norm = cls.parse(state, "checkpoint extras['normalization']")
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from exc
        if norm.needs_fit:
            raise CheckpointError.at("checkpoint extras['normalization']", "the normalisation statistics are missing",
                                     got=state,
                                     fix="the checkpoint was saved before fit(); retrain or set them explicitly")
        return norm

    @property
    def needs_fit(self) -> bool:
        """True while statistics from the training raw are still missing."""
        if self.mode == "percentile":
            return "min" not in self.params or "max" not in self.params
        return self.mode == "zscore" and ("mean" not in self.params or "std" not in self.params)

    def fit(self, arrays, max_voxels: int = 1_000_000, seed: int = 0) -> Normalizer:
        """Fix the statistics from a bounded random sample of ``arrays`` (numpy arrays, or volumes with
        ``read(start, shape, fill)`` and ``spatial_shape``); a no-op for modes without statistics."""
        if not self.needs_fit:
            return self
        sample = _sample_voxels(list(arrays), max_voxels, np.random.default_rng(seed))
        if sample.size == 0:
            raise DataError.at("normalization", f"no finite raw values to fit the {self.mode!r} statistics on",
                               fix="check the training crops contain raw data")
        if self.mode == "zscore":
            mean, std = float(sample.mean()), float(sample.std())
            if std == 0:
                raise DataError.at("normalization", "the training raw is constant, so its std is 0", got=mean,
                                   fix="give {'mode': 'zscore', 'mean': ..., 'std': ...} explicitly")
            self.params.update(mean=mean, std=std)
        else:
            low, high = (float(v) for v in np.percentile(sample, [self.params["low"], self.params["high"]]))
            if high <= low:
                raise DataError.at("normalization", "the low and high percentiles of the training raw are equal",
                                   got=low, fix="widen 'low'/'high' or give {'mode': 'minmax', 'min': ..., 'max': ...}")
            self.params.update(min=low, max=high)
        return self

    def range_warning(self, arrays, dtype, where: str = "normalization", max_voxels: int = 200_000,
                      seed: int = 0) -> str | None:
        """For 'dtype' scaling of an integer ``dtype``: a one-line warning when a random sample of ``arrays``
        spans under 5 % of the dtype's range (None otherwise, and for every other mode)."""
        dtype = np.dtype(dtype)
        if self.mode != "dtype" or not np.issubdtype(dtype, np.integer):
            return None
        sample = _sample_voxels(list(arrays), max_voxels, np.random.default_rng(seed))
        if sample.size == 0:
            return None
        info = np.iinfo(dtype)
        low, high = float(sample.min()), float(sample.max())
        share = (high - low) / float(info.max - info.min)
        if share >= NARROW_RANGE:
            return None
        scaled = [(v - info.min) / float(info.max - info.min) for v in (low, high)]
        return (f"{where}: the training raw ({dtype}) spans {low:g}..{high:g}, {100 * share:.2g}% of its dtype's "
                f"range, so 'dtype' scaling gives the model values in [{scaled[0]:.3g}, {scaled[1]:.3g}]; "
                "set normalization = {'mode': 'percentile'} (fitted on the training raw) or "
                "{'mode': 'minmax', 'min': ..., 'max': ...}")

    def state(self) -> dict:
        """Plain-JSON description; ``Normalizer.from_state(state())`` rebuilds this normaliser."""
        return {"mode": self.mode, **{k: (v if isinstance(v, bool) else float(v)) for k, v in self.params.items()}}

    def __call__(self, raw) -> np.ndarray:
        raw = np.asarray(raw)
        if self.mode == "dtype" and raw.dtype.kind in "iu" and raw.dtype.itemsize <= 2:
            # float32 arithmetic gives the float64 result exactly for every 8/16-bit value (checked in tests)
            info = np.iinfo(raw.dtype)
            out = raw.astype(np.float32)  # exact; a casting ufunc on a strided view is ~20x slower
            out -= np.float32(info.min)
            out /= np.float32(info.max - info.min)
            return out
        if raw.dtype.kind in "iu" and raw.dtype.itemsize <= 2 and raw.size > 4 * (1 << (8 * raw.dtype.itemsize)):
            # 8/16-bit images: one table lookup per voxel instead of float64 arithmetic (same values)
            index = raw.view(np.dtype(f"u{raw.dtype.itemsize}"))
            return np.take(self._table(raw.dtype), index)
        return self._apply(raw)

    def _table(self, dtype: np.dtype) -> np.ndarray:
        """This normaliser applied to every value of an 8/16-bit dtype, indexed by its unsigned bits."""
        key = (np.dtype(dtype).str, self.mode, tuple(sorted(self.params.items())))
        cached = getattr(self, "_tables", None)
        if cached is None:
            cached = self._tables = {}
        if key not in cached:
            bits = np.arange(1 << (8 * np.dtype(dtype).itemsize), dtype=np.dtype(f"u{np.dtype(dtype).itemsize}"))
            cached[key] = self._apply(bits.view(dtype))
        return cached[key]

    def _apply(self, raw: np.ndarray) -> np.ndarray:
        if self.needs_fit:
            raise DataError.at("normalization", f"the {self.mode!r} statistics are not fitted yet",
                               fix="call Normalizer.fit(training raw) before normalising")
        p = self.params
        if self.mode in ("dtype", "none"):
            if self.mode == "dtype" and np.issubdtype(raw.dtype, np.integer):
                info = np.iinfo(raw.dtype)
                return ((raw.astype(np.float64) - info.min) / float(info.max - info.min)).astype(np.float32)
            return raw.astype(np.float32)
        if self.mode == "zscore":
            return ((raw.astype(np.float64) - p["mean"]) / p["std"]).astype(np.float32)
        out = (raw.astype(np.float64) - p["min"]) / (p["max"] - p["min"])
        return (np.clip(out, 0, 1) if p.get("clip") else out).astype(np.float32)

    def __eq__(self, other) -> bool:
        return isinstance(other, Normalizer) and self.state() == other.state()

    def __repr__(self) -> str:
        return f"Normalizer({self.state()!r})"


def _check_norm_values(mode: str, params: Mapping, where: str) -> list[str]:
    problems = [f"{where}.{k}: expected a number (got {v!r})" for k, v in params.items()
                if k != "clip" and k in NORMALIZATION_KEYS[mode] and not _number(v)]
    if "clip" in params and not isinstance(params["clip"], bool):
        problems.append(f"{where}.clip: expected True or False (got {params['clip']!r})")
    if problems:
        return problems
    if mode == "minmax" and ("min" not in params or "max" not in params):
        problems.append(f"{where}: mode 'minmax' needs 'min' and 'max' (got {dict(params)!r}); "
                        "use 'percentile' to derive them from the training raw")
    if "min" in params and "max" in params and params["max"] <= params["min"]:
        problems.append(f"{where}: 'max' must be greater than 'min' (got {params['min']!r}, {params['max']!r})")
    if mode == "zscore" and ("mean" in params) != ("std" in params):
        problems.append(f"{where}: give both 'mean' and 'std', or neither to fit them (got {dict(params)!r})")
    if mode == "zscore" and params.get("std", 1) <= 0:
        problems.append(f"{where}.std: expected a number > 0 (got {params['std']!r})")
    if mode == "percentile":
        low, high = params.get("low", 1.0), params.get("high", 99.8)
        if not 0 <= low < high <= 100:
            problems.append(f"{where}: expected 0 <= low < high <= 100 (got low={low!r}, high={high!r})")
    return problems


def _sample_voxels(arrays, max_voxels: int, rng) -> np.ndarray:
    """Up to ``max_voxels`` finite values drawn evenly from every array/volume."""
    per = max(1, max_voxels // max(1, len(arrays)))
    parts = [_sample_one(array, per, rng) for array in arrays]
    sample = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    return sample[np.isfinite(sample)]


def _sample_one(array, count: int, rng) -> np.ndarray:
    """``count`` random voxels of an array, or random blocks of a volume (read lazily)."""
    if hasattr(array, "read") and hasattr(array, "spatial_shape"):
        shape = tuple(array.spatial_shape)
        block = tuple(min(s, b) for s, b in zip(shape, _FIT_BLOCK))
        blocks = []
        for _ in range(min(64, math.ceil(count / math.prod(block)))):
            start = tuple(int(rng.integers(0, s - b + 1)) for s, b in zip(shape, block))
            blocks.append(np.asarray(array.read(start, block, fill=0)).reshape(-1))
        return np.concatenate(blocks)[:count]
    flat = np.asarray(array).reshape(-1)
    return flat if flat.size <= count else flat[rng.integers(0, flat.size, count)]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
