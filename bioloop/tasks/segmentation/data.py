"""Training and validation patches from annotated crops.

A crop is an annotated region of a raw image: CellMap crop groups (one binary array per class),
a class-id label image or an instance label image (``label_layout``), from OME-NGFF zarr, plain
zarr or tif, local or ``s3://``. Raw is read at ``input_array_info.scale`` and labels at
``target_array_info.scale`` (resampled when no stored level matches); both line up by world
coordinates (nm): the target patch is centred on the input patch. Classes a crop does not
annotate, and target voxels outside the crop, are NaN (masked out of loss and metrics).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from bioloop.data.datasplit import CropEntry, read_datasplit
from bioloop.data.ngff import Volume
from bioloop.data.sources import exists, open_image
from bioloop.errors import DataError

OPEN_THREADS = 8  # crops opened at once at start-up


@dataclass
class LabelSource:
    """Where one class's target comes from: a volume and how to turn its values into 0/1."""

    volume: Volume
    kind: str  # "binary" (> 0) or "id" (== value)
    value: int = 0

    def mask(self, values: np.ndarray) -> np.ndarray:
        return (values > 0) if self.kind == "binary" else (values == self.value)


@dataclass
class Crop:
    """One annotated region. ``grid`` is the label volume that defines the target voxel grid."""

    name: str
    raw: Volume
    labels: dict[str, LabelSource | None]
    grid: Volume
    shape: tuple[int, ...]  # crop extent in target voxels
    cost: Volume | None = None
    fractions: dict[str, float] = field(default_factory=dict)
    raw_box: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # raw region patches read (cache_crops)

    def read(self, offset, target_shape, input_shape, classes, margin=(0, 0, 0), ids=False):
        """Raw (input_shape + 2*margin), targets (C, target_shape + 2*margin) and cost map for a patch.

        ``offset`` is the patch start in target voxels inside the crop; ``margin`` grows both boxes
        around the same centre (room for rotation before the centre crop). With ``ids`` the target is
        the (1, ...) instance ids of the one class, numbered 1..K within the patch (``targets.derive``
        turns them into training targets after augmentation).
        """
        t_shape = tuple(n + 2 * m for n, m in zip(target_shape, margin))
        t_start = tuple(o - m for o, m in zip(offset, margin))
        target = np.empty((1 if ids else len(classes), *t_shape), dtype=np.float32)
        whole = all(0 <= a and a + n <= e for a, n, e in zip(t_start, t_shape, self.shape))
        inside = None if whole else _inside_mask(t_start, t_shape, self.shape)
        cache: dict[int, np.ndarray] = {}
        for c, name in enumerate(classes):
            source = self.labels.get(name)
            if source is None:
                target[c] = np.nan
                continue
            key = id(source.volume)
            if key not in cache:
                cache[key] = source.volume.read(t_start, t_shape, fill=0)
            if ids:
                from bioloop.tasks.segmentation.targets import compact_ids

                target[0] = compact_ids(cache[key], np.ones(t_shape, bool) if inside is None else inside)
                break
            target[c] = source.mask(cache[key])
            if inside is not None:  # voxels outside the crop are not annotated
                target[c][~inside] = np.nan
        raw_scale = np.asarray(self.raw.scale)
        i_shape = tuple(n + 2 * int(round(m * ts / rs)) if n > 1 else n
                        for n, m, ts, rs in zip(input_shape, margin, self.grid.scale, raw_scale))
        raw = self.raw.read(self.raw_start(offset, target_shape, i_shape), i_shape, fill=0)
        cost = None
        if self.cost is not None:
            cost = self.cost.read(t_start, t_shape, fill=0).astype(np.float32)[None]
        return raw, target, cost

    def raw_start(self, offset, target_shape, input_shape) -> list[int]:
        """Raw voxel start of an ``input_shape`` box centred on the target patch at ``offset``."""
        centre = self.grid.voxel_to_world([o + (n - 1) / 2 for o, n in zip(offset, target_shape)])
        return [int(math.floor(c + 0.5 - (n - 1) / 2)) for c, n in zip(self.raw.world_to_voxel(centre), input_shape)]


def _inside_mask(offset, shape, extent) -> np.ndarray:
    """True where a box at ``offset`` lies inside ``extent`` (outside is unannotated)."""
    mask = np.ones(tuple(shape), bool)
    for axis, (o, n, e) in enumerate(zip(offset, shape, extent)):
        grid = ((np.arange(n) + o) >= 0) & ((np.arange(n) + o) < e)
        view = [1] * len(shape)
        view[axis] = -1
        mask &= grid.reshape(view)
    return mask


# ----------------------------------------------------------------------------- opening crops


def target_info(cfg):
    return cfg.target_array_info or cfg.input_array_info


def open_crops(cfg, usage: str, *, context=None) -> list[Crop]:
    """The crops of ``usage`` ('train' or 'validate') listed in the datasplit, opened in parallel threads.

    ``context`` (raw voxels per axis) sizes the raw box around each crop that ``cache_crops`` holds.
    Nothing is read yet: volumes stay on storage until ``cache_crops``.
    """
    entries = [e for e in read_datasplit(cfg.datasplit_path) if e.usage == usage]
    if len(entries) <= 1:
        crops = [open_crop(cfg, e, context=context) for e in entries]
    else:
        with ThreadPoolExecutor(min(OPEN_THREADS, len(entries)), thread_name_prefix="bioloop-open") as pool:
            crops = list(pool.map(lambda e: open_crop(cfg, e, context=context), entries))
    return [c for c in crops if c is not None]


def cache_crops(cfg, crops: list[Crop], *, processes: int = 1, say=None) -> None:
    """Serve every crop's label arrays, cost map and raw box from memory within ``cfg.cache_bytes``.

    Regions are read once, in parallel (``bioloop.data.cache.hold``); when they exceed the bound the
    later ones are read through a chunk-aligned LRU cache (one line says so). ``processes``: how many
    DataLoader processes read patches (each keeps its own chunk cache).
    """
    from bioloop.data import cache as C
    from bioloop.engine.progress import progress_enabled

    bound = cfg.cache_bytes if getattr(cfg, "cache_bytes", None) is not None else C.default_cache_bytes()
    requests, slots = [], []
    for crop in crops:
        seen: dict[int, int] = {}
        for name, source in crop.labels.items():
            if source is not None and id(source.volume) not in seen:
                seen[id(source.volume)] = len(requests)
                requests.append(C.Region.whole(source.volume))
                slots.append((crop, "labels", id(source.volume)))
        if crop.cost is not None:
            requests.append(C.Region.whole(crop.cost))
            slots.append((crop, "cost", None))
        if crop.raw_box is not None:
            requests.append(C.Region(crop.raw, *crop.raw_box))
            slots.append((crop, "raw", None))
        else:
            requests.append(None)
            slots.append((crop, "raw-chunked", None))
    whole = [r for r in requests if r is not None]
    if not whole:
        return

    def bar(total):
        return tqdm(total=total, desc="reading crops", unit="array", disable=not progress_enabled(False))

    served = iter(C.hold(whole, bound, processes=processes, say=say or _say, bar=bar))
    for (crop, kind, key), request in zip(slots, requests):
        if request is None:
            continue
        volume = next(served)
        if kind == "labels":
            crop.labels = {n: (LabelSource(volume, s.kind, s.value) if s is not None and id(s.volume) == key else s)
                           for n, s in crop.labels.items()}
        elif kind == "cost":
            crop.cost = volume
        else:
            crop.raw = volume


def _say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # once per run, not once per DDP process
        print(message, file=sys.stderr, flush=True)


def open_crop(cfg, entry: CropEntry, *, context=None) -> Crop | None:
    options = cfg.storage_options or None
    in_scale = tuple(cfg.input_array_info.scale)
    t_scale = tuple(target_info(cfg).scale)
    raw = open_image(entry.raw_path, in_scale, storage_options=options)
    labels: dict[str, LabelSource | None] = {}
    grid = None
    if cfg.label_layout == "per_class":
        for name in cfg.classes:
            path = f"{entry.gt_path.rstrip('/')}/{name}"
            if name not in entry.classes or not exists(path, options):
                labels[name] = None
                continue
            volume = open_image(path, t_scale, storage_options=options, labels=True)
            labels[name] = LabelSource(volume, "binary")
            grid = grid or volume
    else:
        volume = open_image(entry.gt_path, t_scale, storage_options=options, labels=True)
        grid = volume
        ids = cfg.class_ids or {name: i + 1 for i, name in enumerate(cfg.classes)}
        for name in cfg.classes:
            if name not in entry.classes:
                labels[name] = None
            elif cfg.label_layout in ("instances", "binary"):
                labels[name] = LabelSource(volume, "binary")
            else:
                labels[name] = LabelSource(volume, "id", int(ids[name]))
    if grid is None:
        return None  # this crop annotates none of the requested classes
    for source in labels.values():
        if source is not None and tuple(source.volume.spatial_shape) != tuple(grid.spatial_shape):
            raise DataError.at(entry.gt_path, "the class arrays of one crop differ in shape",
                               got={n: s.volume.spatial_shape for n, s in labels.items() if s},
                               fix="every class of a crop must cover the same box")
    cost = _cost_map(entry, t_scale, options)
    if cost is not None and tuple(cost.spatial_shape) != tuple(grid.spatial_shape):
        raise DataError.at(cost.path, "the cost map differs in shape from its labels",
                           got=(cost.spatial_shape, grid.spatial_shape), fix="write the _CM file on the _GT grid")
    return Crop(_crop_name(entry.gt_path), raw, labels, grid, tuple(grid.spatial_shape), cost,
                raw_box=_raw_box(raw, grid, context))


def _crop_name(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name[:-3] if name.endswith("_GT") else name


def _cost_map(entry: CropEntry, scale, options) -> Volume | None:
    """The Allen cost map ``name_CM.tif`` next to ``name_GT.tif``, if there is one."""
    path = entry.gt_path
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        stem = path[: -len(suffix)] if path.endswith(suffix) else None
        if stem and stem.endswith("_GT"):
            candidate = f"{stem[:-3]}_CM{suffix}"
            if exists(candidate, options):
                return open_image(candidate, scale, storage_options=options)
            return None
    return None


def _raw_box(raw: Volume, grid: Volume, context):
    """(start, shape) in raw voxels of the region patches of a crop read: its box grown by ``context``."""
    if context is None:
        return None
    lo_nm, hi_nm = grid.roi
    half = np.asarray(grid.scale) / 2
    lo = np.floor(np.asarray(raw.world_to_voxel(np.asarray(lo_nm) + half))).astype(int) - np.asarray(context) - 1
    hi = np.ceil(np.asarray(raw.world_to_voxel(np.asarray(hi_nm) - half))).astype(int) + np.asarray(context) + 2
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo)


# ----------------------------------------------------------------------------- datasets


def _squeeze(spatial_dims: int, raw, target, cost):
    """2D patches drop their singleton z axis: raw (1, y, x), target (C, y, x)."""
    if spatial_dims == 2:
        raw, target = raw[0], target[:, 0]
        cost = None if cost is None else cost[:, 0]
    return raw[None], target, cost


def _derive(cfg, target):
    """Instance ids (1, *S) -> the derived training targets (C, *S) when instance_targets is set."""
    if cfg.instance_targets is None:
        return target
    from bioloop.tasks.segmentation.targets import derive

    scale = tuple(target_info(cfg).scale)[3 - cfg.spatial_dims:]
    return derive(target[0], cfg.instance_targets, scale)


def _sample(raw, target, cost) -> dict:
    out = {"raw": torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)),
           "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))}
    if cost is not None:
        out["cost"] = torch.from_numpy(np.ascontiguousarray(cost, dtype=np.float32))
    return out


class PatchSource:
    """Cuts (augmented, normalised) training patches; shared by RandomPatches and the patch buffer."""

    def __init__(self, cfg, crops: list[Crop], normalizer):
        from bioloop.tasks.segmentation import transforms as T

        if not crops:
            raise DataError.at(str(cfg.datasplit_path), "no training crops with any of the classes "
                               f"{list(cfg.classes)}", fix="check the datasplit and the classes setting")
        self.cfg = cfg
        self.crops = crops
        self.normalizer = normalizer
        self.in_shape = tuple(cfg.input_array_info.shape)
        self.t_shape = tuple(target_info(cfg).shape)
        self.margin = T.rotation_margin(self.t_shape, cfg.spatial_transforms)
        self.chooser = None
        if cfg.weighted_sampler:
            from bioloop.tasks.segmentation.sampling import WeightedCropChooser, class_weights_for_crops

            fractions = [crop_fractions(c, cfg.classes) for c in crops]
            self.chooser = WeightedCropChooser(class_weights_for_crops(fractions, list(cfg.classes)))
        self.points = None
        if cfg.foreground_sampling > 0 and cfg.instance_targets is None:
            self.points = [crop_foreground_points(c, cfg.classes, seed=i) for i, c in enumerate(crops)]
        self.albumentations = T.AlbumentationsAdapter(cfg.augmentations) if cfg.augmentations is not None else None
        self.on_device = bool(getattr(cfg, "augment_on_device", False))

    def _place(self, rng: np.random.Generator, index: int | None):
        """The crop and the patch offset in it: the first random draws of a sample."""
        if self.chooser is not None:
            index = self.chooser.choose(rng)
        elif index is None:
            index = int(rng.integers(len(self.crops)))
        crop = self.crops[index]
        if self.points is not None:
            from bioloop.tasks.segmentation.sampling import foreground_offset

            return crop, foreground_offset(rng, crop.shape, self.t_shape, self.points[index],
                                           self.cfg.foreground_sampling)
        return crop, tuple(int(rng.integers(0, max(1, c - s + 1))) for c, s in zip(crop.shape, self.t_shape))

    def draw(self, rng: np.random.Generator, index: int | None = None) -> dict:
        from bioloop.tasks.segmentation import transforms as T

        cfg = self.cfg
        crop, offset = self._place(rng, index)
        raw, target, cost = crop.read(offset, self.t_shape, self.in_shape, cfg.classes, self.margin,
                                      ids=cfg.instance_targets is not None)
        device_params = None
        if self.on_device:  # same draws as below; device_augment applies them to the whole batch
            from bioloop.tasks.segmentation import device_augment

            device_params = device_augment.draw(cfg, rng, self.in_shape, self.t_shape)
            raw = self.normalizer(raw)
        else:
            raw, target, cost = T.spatial_augment(raw, target, cfg.spatial_transforms, rng, cost=cost,
                                                  out_shape=self.in_shape, target_out_shape=self.t_shape)
            raw = self.normalizer(raw)
            if cfg.intensity_transforms:
                raw = T.intensity_augment(raw, cfg.intensity_transforms, rng)
        if self.albumentations is not None:
            raw, target, cost = self.albumentations(raw, target, cost, rng)
        raw, target, cost = _squeeze(cfg.spatial_dims, raw, target, cost)
        sample = _sample(raw, _derive(cfg, target), cost)
        if device_params is not None:
            sample["augment"] = device_params
        if cfg.train_raw_value_transforms is not None:
            sample["raw"] = T.apply_value_transform(cfg.train_raw_value_transforms, sample["raw"])
        if cfg.target_value_transforms is not None:
            sample["target"] = T.apply_value_transform(cfg.target_value_transforms, sample["target"])
        return sample

    def batched(self) -> bool:
        """Whether ``draw_many`` can cut a batch at once: no rotation, albumentations, device
        augmentation or instance targets (those stay per sample)."""
        cfg = self.cfg
        return (not any(self.margin) and self.albumentations is None and not self.on_device
                and cfg.instance_targets is None and "rotate" not in (cfg.spatial_transforms or {}))

    def draw_many(self, seeds, indices) -> list[dict]:
        """``[draw(default_rng(seed), index) ...]``, equal sample for sample: the patches of one crop are
        copied into one batch array per cached array, label masks and normalisation run once on it;
        mirror/transpose are views of each sample.

        Each sample's generator makes the same draws in the same order as ``draw`` (place, spatial
        choices, then intensity), so a sample is still a function of its seed alone. Samples whose
        boxes are not wholly inside in-memory arrays are drawn one by one."""
        from bioloop.data.cache import HeldVolume
        from bioloop.tasks.segmentation import transforms as T

        cfg = self.cfg
        rngs = [np.random.default_rng(seed) for seed in seeds]
        out: list[dict | None] = [None] * len(rngs)
        groups: dict[int, list] = {}
        for i, (rng, index) in enumerate(zip(rngs, indices)):
            crop, offset = self._place(rng, index)
            raw_start = crop.raw_start(offset, self.t_shape, self.in_shape)
            arrays = [crop.raw] + [s.volume for s in crop.labels.values() if s is not None] + \
                ([crop.cost] if crop.cost is not None else [])
            boxes = [(raw_start, self.in_shape)] + [(offset, self.t_shape)] * (len(arrays) - 1)
            if not _inside(offset, self.t_shape, crop.shape) or not all(
                    isinstance(v, HeldVolume) and v.ndim == 3 and _inside(b, n, v.array.shape)
                    for v, (b, n) in zip(arrays, boxes)):
                out[i] = self.draw(np.random.default_rng(seeds[i]), indices[i])
                continue
            _, flips, order = T.draw_spatial(cfg.spatial_transforms or {}, rng, self.in_shape, self.t_shape)
            groups.setdefault(id(crop), []).append((i, crop, offset, raw_start, tuple(flips), tuple(order)))
        for members in groups.values():
            crop = members[0][1]
            raw = self.normalizer(_gather(crop.raw.array, [m[3] for m in members], self.in_shape))
            offsets = [m[2] for m in members]
            target = np.empty((len(members), len(cfg.classes), *self.t_shape), np.float32)
            cut: dict[int, np.ndarray] = {}
            for c, name in enumerate(cfg.classes):
                source = crop.labels.get(name)
                if source is None:
                    target[:, c] = np.nan
                    continue
                key = id(source.volume)
                if key not in cut:
                    cut[key] = _gather(source.volume.array, offsets, self.t_shape)
                target[:, c] = source.mask(cut[key])
            cost = None if crop.cost is None else \
                _gather(crop.cost.array, offsets, self.t_shape).astype(np.float32)[:, None]
            for k, (i, _, _, _, flips, order) in enumerate(members):  # mirror/transpose: views, no copies
                r, t, c_ = raw[k], target[k], None if cost is None else cost[k]
                for a in flips:
                    r, t = np.flip(r, a), np.flip(t, a + 1)
                    c_ = None if c_ is None else np.flip(c_, a + 1)
                if order != (0, 1, 2):
                    r, t = np.transpose(r, order), np.transpose(t, [0] + [o + 1 for o in order])
                    c_ = None if c_ is None else np.transpose(c_, [0] + [o + 1 for o in order])
                if cfg.intensity_transforms:
                    r = T.intensity_augment(r, cfg.intensity_transforms, rngs[i])
                out[i] = self._finish(r, t, c_)
        return out

    def _finish(self, raw, target, cost) -> dict:
        from bioloop.tasks.segmentation import transforms as T

        cfg = self.cfg
        raw, target, cost = _squeeze(cfg.spatial_dims, raw, target, cost)
        sample = _sample(raw, target, cost)
        if cfg.train_raw_value_transforms is not None:
            sample["raw"] = T.apply_value_transform(cfg.train_raw_value_transforms, sample["raw"])
        if cfg.target_value_transforms is not None:
            sample["target"] = T.apply_value_transform(cfg.target_value_transforms, sample["target"])
        return sample


def _inside(start, shape, extent) -> bool:
    return all(0 <= b and b + n <= e for b, n, e in zip(start, shape, extent))


def _gather(array: np.ndarray, starts, shape) -> np.ndarray:
    """(B, *shape) boxes of ``array`` at ``starts``, copied into one batch array (slices: a fancy-index
    gather measured 2-3x slower for patches of this size)."""
    out = np.empty((len(starts), *shape), array.dtype)
    for k, start in enumerate(starts):
        out[k] = array[tuple(slice(b, b + n) for b, n in zip(start, shape))]
    return out


def crop_fractions(crop: Crop, classes) -> dict[str, float]:
    """Share of annotated voxels that belong to each class (NaN for classes the crop lacks)."""
    if crop.fractions:
        return crop.fractions
    out = {}
    cache: dict[int, np.ndarray] = {}
    for name in classes:
        source = crop.labels.get(name)
        if source is None:
            out[name] = float("nan")
            continue
        key = id(source.volume)
        if key not in cache:
            cache[key] = source.volume.read((0,) * len(crop.shape), crop.shape, fill=0)
        out[name] = float(np.count_nonzero(source.mask(cache[key]))) / max(1, int(np.prod(crop.shape)))
    crop.fractions = out
    return out


def crop_foreground_points(crop: Crop, classes, *, seed: int = 0) -> list[np.ndarray | None]:
    """Foreground voxels (crop target coordinates) of each class, None where the crop does not annotate it;
    at most 4096 per class, kept at random with ``seed`` (``sampling.foreground_points``)."""
    from bioloop.tasks.segmentation.sampling import foreground_points

    out: list[np.ndarray | None] = []
    cache: dict[int, np.ndarray] = {}
    for name in classes:
        source = crop.labels.get(name)
        if source is None:
            out.append(None)
            continue
        key = id(source.volume)
        if key not in cache:
            cache[key] = source.volume.read((0,) * len(crop.shape), crop.shape, fill=0)
        out.append(foreground_points(source.mask(cache[key]), seed=seed))
    return out


class RandomPatches(Dataset):
    """A fresh random patch for every (index, seed) the engine's sampler gives."""

    def __init__(self, cfg, crops: list[Crop], normalizer):
        self.source = PatchSource(cfg, crops, normalizer)

    def __len__(self) -> int:
        return len(self.source.crops)

    def __getitem__(self, key):
        index, seed = key
        return self.source.draw(np.random.default_rng(seed), index)

    def __getitems__(self, keys):
        """A batch of samples, equal to ``[self[k] for k in keys]``, cut at once where the settings allow."""
        if not self.source.batched():
            return [self[k] for k in keys]
        return self.source.draw_many([k[1] for k in keys], [k[0] for k in keys])


class BufferedPatches(Dataset):
    """The Allen patch buffer: ``patch_per_buffer`` patches, cut again every ``epoch_shuffle`` epochs.

    Slot ``i`` of refresh round ``r`` is a pure function of (random_seed, r, i), so resume and any
    number of DataLoader workers see the same patches. Augmentation is fresh for every draw.
    """

    def __init__(self, cfg, crops: list[Crop], normalizer):
        from bioloop.tasks.segmentation.sampling import PatchBuffer

        self.source = PatchSource(cfg, crops, normalizer)
        self.buffer = PatchBuffer(self._cut, cfg.patch_per_buffer, cfg.epoch_shuffle)
        self.seed = cfg.random_seed
        self.epoch = 0

    def _cut(self, rng):
        return self.source.draw(rng)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.buffer.size

    def __getitem__(self, key):
        index, _seed = key
        return self.buffer.get(index, self.epoch, self.seed)


class Tiles(Dataset):
    """Deterministic patches that together cover every validation crop completely."""

    def __init__(self, cfg, crops: list[Crop], normalizer):
        self.cfg = cfg
        self.crops = crops
        self.normalizer = normalizer
        self.in_shape = tuple(cfg.input_array_info.shape)
        self.t_shape = tuple(target_info(cfg).shape)
        tiles = [(i, offset) for i, crop in enumerate(crops) for offset in tile_offsets(crop.shape, self.t_shape)]
        # a fixed shuffle, so that validation_batch_limit samples every crop rather than one corner
        order = np.random.default_rng(0).permutation(len(tiles))
        self.tiles = [tiles[i] for i in order]

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index):
        from bioloop.tasks.segmentation import transforms as T

        crop_index, offset = self.tiles[index]
        raw, target, cost = self.crops[crop_index].read(offset, self.t_shape, self.in_shape, self.cfg.classes,
                                                        ids=self.cfg.instance_targets is not None)
        raw, target, cost = _squeeze(self.cfg.spatial_dims, self.normalizer(raw), target, cost)
        sample = _sample(raw, _derive(self.cfg, target), cost)
        if self.cfg.val_raw_value_transforms is not None:
            sample["raw"] = T.apply_value_transform(self.cfg.val_raw_value_transforms, sample["raw"])
        if self.cfg.target_value_transforms is not None:
            sample["target"] = T.apply_value_transform(self.cfg.target_value_transforms, sample["target"])
        return sample


def normalize(raw: np.ndarray, mode) -> np.ndarray:
    """Normalise with a ``normalization`` setting or a recorded normaliser state."""
    from bioloop.tasks.segmentation.transforms import Normalizer

    return Normalizer.from_state(mode)(raw)


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
