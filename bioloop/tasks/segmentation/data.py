"""Training and validation patches from CellMap-style crops (raw + one binary array per class).

Labels line up with raw by world coordinates (nm): a crop's voxel ``i`` sits at
``crop.translation + i * scale``, which is read from raw at the same world position.
Classes a crop does not annotate are NaN targets (masked out of loss and metrics).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bioloop.data.datasplit import read_datasplit
from bioloop.data.ngff import Volume, open_volume
from bioloop.errors import DataError

_AXIS_INDEX = {"z": 0, "y": 1, "x": 2}


@dataclass
class Crop:
    """One annotated region: the raw volume, and a label volume per class (None = not annotated)."""

    name: str
    raw: Volume
    labels: dict[str, Volume | None]
    start_vox: tuple[int, ...]  # crop origin in raw voxels
    shape: tuple[int, ...]  # crop extent in voxels

    def read(self, offset, shape, classes) -> tuple[np.ndarray, np.ndarray]:
        """Raw and targets (C, *shape) of a box at ``offset`` voxels inside the crop."""
        raw = self.raw.read(tuple(s + o for s, o in zip(self.start_vox, offset)), shape, fill=0)
        target = np.full((len(classes), *shape), np.nan, dtype=np.float32)
        for c, name in enumerate(classes):
            volume = self.labels.get(name)
            if volume is not None:
                inside = _inside_mask(offset, shape, self.shape)
                values = volume.read(offset, shape, fill=0).astype(np.float32)
                target[c] = np.where(inside, (values > 0).astype(np.float32), np.nan)
        return raw, target


def _inside_mask(offset, shape, extent) -> np.ndarray:
    """True where a box at ``offset`` lies inside ``extent`` (outside is unannotated)."""
    grids = [((np.arange(n) + o) >= 0) & ((np.arange(n) + o) < e) for o, n, e in zip(offset, shape, extent)]
    mask = np.ones(tuple(shape), bool)
    for axis, grid in enumerate(grids):
        view = [1] * len(grids)
        view[axis] = -1
        mask &= grid.reshape(view)
    return mask


def open_crops(cfg, usage: str) -> list[Crop]:
    """The crops of ``usage`` ('train' or 'validate') listed in the datasplit."""
    entries = [e for e in read_datasplit(cfg.datasplit_path) if e.usage == usage]
    scale = tuple(cfg.input_array_info.scale)
    crops = []
    for entry in entries:
        raw = open_volume(entry.raw_path, scale, storage_options=cfg.storage_options or None)
        labels, reference = {}, None
        for name in cfg.classes:
            path = f"{entry.gt_path.rstrip('/')}/{name}"
            if name not in entry.classes or not _exists(path, cfg):
                labels[name] = None
                continue
            labels[name] = reference = open_volume(path, scale, storage_options=cfg.storage_options or None)
        if reference is None:
            continue  # this crop annotates none of the requested classes
        start = _world_to_raw_voxel(reference, raw, entry.gt_path)
        crops.append(Crop(Path(entry.gt_path).name, raw, labels, start, tuple(reference.shape)))
    return crops


def _exists(path: str, cfg) -> bool:
    try:
        open_volume(path, None, storage_options=cfg.storage_options or None)
    except DataError:
        return False
    return True


def _world_to_raw_voxel(label: Volume, raw: Volume, where: str) -> tuple[int, ...]:
    position = np.asarray(raw.world_to_voxel(label.translation))
    rounded = np.round(position)
    if np.any(np.abs(position - rounded) > 1e-3):
        raise DataError.at(where, "crop does not sit on the raw voxel grid", got=tuple(label.translation),
                           fix="labels and raw must share the voxel size; resampling arrives with a later release")
    return tuple(int(v) for v in rounded)


def normalize(raw: np.ndarray, mode: str) -> np.ndarray:
    """'dtype' maps integer data to [0, 1] by its dtype range; 'none' only casts to float32."""
    if mode == "dtype" and np.issubdtype(raw.dtype, np.integer):
        info = np.iinfo(raw.dtype)
        return ((raw.astype(np.float32) - info.min) / float(info.max - info.min)).astype(np.float32)
    return raw.astype(np.float32)


def _squeeze(cfg, raw, target):
    """2D patches drop their singleton z axis: raw (1, y, x), target (C, y, x)."""
    if cfg.spatial_dims == 2:
        raw, target = raw[0], target[:, 0]
    return raw[None], target


class RandomPatches(Dataset):
    """A fresh random patch inside a crop for every (index, seed) the engine's sampler gives."""

    def __init__(self, cfg, crops: list[Crop]):
        if not crops:
            raise DataError.at(str(cfg.datasplit_path), "no training crops with any of the classes "
                               f"{list(cfg.classes)}", fix="check the datasplit and the classes setting")
        self.cfg = cfg
        self.crops = crops
        self.shape = tuple(cfg.input_array_info.shape)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, key):
        index, seed = key
        rng = np.random.default_rng(seed)
        crop = self.crops[index]
        offset = tuple(int(rng.integers(0, max(1, c - s + 1))) for c, s in zip(crop.shape, self.shape))
        raw, target = crop.read(offset, self.shape, self.cfg.classes)
        raw, target = augment(raw, target, self.cfg.spatial_transforms, rng)
        raw, target = _squeeze(self.cfg, normalize(raw, self.cfg.normalization), target)
        return {"raw": torch.from_numpy(np.ascontiguousarray(raw)), "target": torch.from_numpy(np.ascontiguousarray(target))}


def augment(raw: np.ndarray, target: np.ndarray, spec, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mirror and transpose only along the axes the spec names ((z, y, x) raw; (C, z, y, x) target)."""
    if not spec:
        return raw, target
    for axis, probability in spec.get("mirror", {}).get("axes", {}).items():
        if rng.random() < probability:
            a = _AXIS_INDEX[axis]
            raw, target = np.flip(raw, a), np.flip(target, a + 1)
    names = spec.get("transpose", {}).get("axes", [])
    if len(names) >= 2:
        axes = [_AXIS_INDEX[n] for n in names if raw.shape[_AXIS_INDEX[n]] > 1 or len(set(raw.shape)) == 1]
        sizes = {raw.shape[a] for a in axes}
        if len(axes) >= 2 and len(sizes) == 1:  # only axes of equal length can swap places
            order = list(range(3))
            shuffled = list(rng.permutation(axes))
            for a, b in zip(axes, shuffled):
                order[a] = b
            raw = np.transpose(raw, order)
            target = np.transpose(target, [0] + [o + 1 for o in order])
    return raw, target


class Tiles(Dataset):
    """Deterministic patches that together cover every validation crop completely."""

    def __init__(self, cfg, crops: list[Crop]):
        self.cfg = cfg
        self.crops = crops
        self.shape = tuple(cfg.input_array_info.shape)
        self.tiles = [(i, offset) for i, crop in enumerate(crops) for offset in tile_offsets(crop.shape, self.shape)]

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index):
        crop_index, offset = self.tiles[index]
        raw, target = self.crops[crop_index].read(offset, self.shape, self.cfg.classes)
        raw, target = _squeeze(self.cfg, normalize(raw, self.cfg.normalization), target)
        return {"raw": torch.from_numpy(np.ascontiguousarray(raw)), "target": torch.from_numpy(np.ascontiguousarray(target))}


def axis_starts(length: int, patch: int, stride: int | None = None) -> list[int]:
    """Tile starts along one axis so that [0, length) is fully covered; the last tile ends at length."""
    stride = stride or patch
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch, stride))
    starts.append(length - patch)
    return sorted(set(starts))


def tile_offsets(extent, patch, stride=None) -> list[tuple[int, ...]]:
    """Every tile start (one per axis product) covering ``extent``."""
    strides = stride or patch
    return list(itertools.product(*(axis_starts(e, p, s) for e, p, s in zip(extent, patch, strides))))
