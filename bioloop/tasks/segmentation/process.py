"""`bioloop process`: class probabilities -> semantic masks and instance labels, blockwise.

Input ``<input>/<class>`` holds probabilities written by predict (float32, float16, or uint8 rescaled
to [0, 1] on read); output
``<output>/<class>`` is an OME-NGFF label image with the same voxel size and translation:
uint8 0/1 for semantic classes, uint32/uint64 ids for instance classes. Instance images carry
OME-NGFF ``image-label`` metadata and ``<output>`` lists them as a labels group (``labels``), so
napari (napari-ome-zarr) and other OME-NGFF readers open them as label layers. ``zarr_format`` 3
writes OME-NGFF 0.5, 2 writes 0.4.

Memory: thresholding and connected components run per block (``block_shape``). Provisional
per-block labels go to a temporary zarr array on disk; objects crossing block faces are
merged with a union-find over the face-adjacent label pairs (connected components of that
graph), then ids are made consecutive and ``min_size`` is applied with the *global* object
sizes. Memory is one block plus one lookup entry per provisional object.

Two paths need a whole class volume in memory: the watershed (it is not exact blockwise;
volumes above ``watershed_max_voxels`` are refused with an error) and ``process_func``
(user code receives the whole probability volume of a class).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import zarr
from scipy import ndimage
from tqdm.auto import tqdm

from bioloop.config import validators as v
from bioloop.config.schema import setting
from bioloop.data.ngff import create_volume, open_volume, write_labels_list
from bioloop.tasks.segmentation.probabilities import decoded
from bioloop.engine.progress import progress_enabled
from bioloop.errors import ConfigError, DataError

_DEFAULT_BLOCK = (64, 256, 256)


@attrs.frozen(kw_only=True)
class ProcessConfig:
    """Post-processing of predicted probabilities into masks and instances (`bioloop process`)."""

    thresholds: float | dict[str, float] = setting(
        0.5, "probability above which a voxel is foreground: one value, or {class: value} (others use 0.5)")
    instance_classes: list[str] | str = setting(
        factory=list, doc="classes turned into instances (connected components, ids); 'all' for every class")
    connectivity: int = setting(1, "voxel neighbourhood of objects: 1 = faces (6), 2 = +edges (18), 3 = +corners (26)")
    watershed: bool = setting(False, "split touching instances with a distance-transform watershed")
    min_distance: float = setting(40.0, "nm between watershed seeds (distance-transform peaks)",
                                  validator=v.greater_than(0))
    min_size: int = setting(0, "objects with fewer voxels are removed (semantic classes too); 0 keeps all",
                            validator=v.at_least(0))
    dtype: Literal["uint32", "uint64"] = setting("uint32", "integer type of instance label images")
    block_shape: tuple[int, ...] | None = setting(
        None, "voxels (z, y, x) per processing block (and output chunk); None uses (64, 256, 256)",
        validator=v.each_positive)
    watershed_max_voxels: int = setting(2 ** 27, "largest class volume (voxels) the in-memory watershed accepts",
                                        validator=v.at_least(1))
    agglomeration: Literal["mutex_watershed", "watershed"] = setting(
        "mutex_watershed", "instance_targets 'affinities': 'mutex_watershed' (mwatershed, every offset) or "
                           "'watershed' (seeded, on 1 - the lowest nearest-neighbour affinity)")
    seed_threshold: float | None = setting(
        None, "seeded watershed: seeds are regions where the elevation (boundary probability, 1 - affinity, "
              "1 - distance target) is below this; None = 0.3, for 'distance' 1 - tanh(2.5 / distance_scale)",
        validator=v.between(0.0, 1.0))
    mutex_bias: float | list[float] = setting(
        0.5, "mutex watershed: subtracted from each affinity (one value or one per offset); higher splits more")
    merge_threshold: float = setting(0.5, "mutex watershed: fragments of neighbouring blocks merge when their mean "
                                          "affinity across the shared face exceeds this",
                                     validator=v.between(0.0, 1.0))
    halo: int = setting(16, "instance targets: voxels of context read on each side of a block (at least the "
                            "largest affinity offset is used)", validator=v.at_least(0))
    process_func: Any = setting(
        None, "callable(probabilities (z, y, x) float32, class_name, scale) -> integer labels; replaces the "
              "built-in steps and gets the whole class volume in memory")

    def threshold_for(self, name: str) -> float:
        if isinstance(self.thresholds, dict):
            return float(self.thresholds.get(name, 0.5))
        return float(self.thresholds)

    def is_instance(self, name: str) -> bool:
        if isinstance(self.instance_classes, str):
            return self.instance_classes == "all" or self.instance_classes == name
        return name in self.instance_classes

    def check(self) -> list[str]:
        """Problems found in the section alone; each starts with its key."""
        problems = []
        values = self.thresholds.values() if isinstance(self.thresholds, dict) else [self.thresholds]
        if not all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in values):
            problems.append(f"thresholds: every threshold must be between 0 and 1 (got {self.thresholds!r})")
        if isinstance(self.instance_classes, str) and self.instance_classes != "all":
            problems.append(f"instance_classes: expected a list of classes or 'all' "
                            f"(got {self.instance_classes!r})")
        if self.connectivity not in (1, 2, 3):
            problems.append(f"connectivity: expected 1, 2 or 3 (got {self.connectivity!r})")
        if self.block_shape is not None and len(self.block_shape) != 3:
            problems.append(f"block_shape: expected 3 entries (z, y, x) (got {self.block_shape!r})")
        if self.process_func is not None and not callable(self.process_func):
            problems.append(f"process_func: expected a function (got {self.process_func!r})")
        if self.watershed and not self.instance_classes:
            problems.append("watershed: only instance classes are split, but instance_classes is empty; "
                            "list them in process.instance_classes")
        return problems

    def check_against(self, classes) -> list[str]:
        """Problems with class names this section uses that are not in ``classes``."""
        known = list(classes)
        problems = []
        named = [("thresholds", k) for k in self.thresholds] if isinstance(self.thresholds, dict) else []
        if not isinstance(self.instance_classes, str):
            named += [("instance_classes", k) for k in self.instance_classes]
        for key, name in named:
            if name not in known:
                problems.append(f"process.{key}: unknown class {name!r}; the classes are {known}")
        return problems


def process_volume(cfg_process: ProcessConfig, classes, *, input: str, output: str, overwrite: bool = False,
                   storage_options: dict | None = None, show_progress: bool = True,
                   targets: dict | None = None, zarr_format: int = 3) -> Path:
    """Turn ``<input>/<class>`` probabilities into ``<output>/<class>`` masks/instances; returns ``output``.

    With ``targets`` (``InstanceTargets.state``) the input holds the predicted target channels of the
    one class, which ``agglomerate.process_instances`` turns into instances.
    """
    cfg = cfg_process
    problems = [f"process.{p}" for p in cfg.check()] + cfg.check_against(classes)
    if problems:
        raise ConfigError.many(problems)
    output_path = Path(output)
    if os.path.exists(str(output)) and not overwrite:
        raise DataError.at(str(output), "output already exists", fix="choose another --output or pass --overwrite")
    options = storage_options or None
    if targets is not None and cfg.process_func is None:
        from bioloop.tasks.segmentation.agglomerate import process_instances

        for name in classes:
            process_instances(cfg, targets, name, input=input, output=output, overwrite=overwrite,
                              storage_options=options, show_progress=show_progress, zarr_format=zarr_format)
        write_labels_list(str(output).rstrip("/"), list(classes), zarr_format=zarr_format, storage_options=options)
        return output_path
    volumes = {name: decoded(open_volume(f"{str(input).rstrip('/')}/{name}", None, storage_options=options),
                             f"{str(input).rstrip('/')}/{name}", options) for name in classes}
    for name, vol in volumes.items():
        if len(vol.spatial_shape) != 3:
            raise DataError.at(vol.path, "expected a (z, y, x) probability image", got=vol.spatial_shape)
        instance = cfg.is_instance(name)
        dtype = np.dtype(cfg.dtype) if instance else np.dtype(np.uint8)
        block = _block(cfg, vol.spatial_shape)
        out = create_volume(f"{str(output).rstrip('/')}/{name}", vol.spatial_shape, dtype, scale=vol.scale,
                            translation=vol.translation, chunks=block, overwrite=overwrite,
                            storage_options=options, attributes={"bioloop": {
                                "kind": "instance" if instance else "semantic", "class": name,
                                **_raw_of(f"{str(input).rstrip('/')}/{name}", options)}},
                            zarr_format=zarr_format, image_label={} if instance else None)
        if cfg.process_func is not None:
            out[...] = _apply_func(cfg, vol, name, dtype)
        elif instance and cfg.watershed:
            out[...] = _watershed(cfg, vol, name, dtype)
        else:
            _blockwise(cfg, vol, name, out, dtype, instance, output_path, show_progress)
    instances = [name for name in classes if cfg.is_instance(name)]
    if instances:
        write_labels_list(str(output).rstrip("/"), instances, zarr_format=zarr_format, storage_options=options)
    return output_path


def _raw_of(path: str, options) -> dict:
    """``{"raw": path}`` when predict recorded which raw image the probabilities come from."""
    try:
        group = zarr.open_group(path, mode="r", storage_options=options) if options else zarr.open_group(path, mode="r")
        raw = dict(group.attrs).get("bioloop", {}).get("raw")
    except Exception:  # noqa: BLE001 - probabilities from elsewhere carry no record
        return {}
    return {"raw": raw} if raw else {}


# ----------------------------------------------------------------------------- blockwise labelling


def _block(cfg: ProcessConfig, shape) -> tuple[int, ...]:
    block = cfg.block_shape or _DEFAULT_BLOCK
    return tuple(max(1, min(int(b), int(n))) for b, n in zip(block, shape))


def _boxes(shape, block) -> list[tuple[slice, ...]]:
    starts = [range(0, n, b) for n, b in zip(shape, block)]
    return [tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block, shape))
            for start in itertools.product(*starts)]


def _read(vol, box) -> np.ndarray:
    return vol.read(tuple(s.start for s in box), tuple(s.stop - s.start for s in box))


def _blockwise(cfg, vol, name, out, dtype, instance, output_path, show_progress) -> None:
    shape, block = vol.spatial_shape, _block(cfg, vol.spatial_shape)
    thr = cfg.threshold_for(name)
    boxes = _boxes(shape, block)
    bar = tqdm(total=2 * len(boxes), desc=f"process {name}", unit="block",
               disable=not progress_enabled(not show_progress))
    try:
        if not instance and cfg.min_size == 0:  # plain threshold, no objects needed
            for box in boxes:
                out[box] = (_read(vol, box) > thr).astype(np.uint8)
                bar.update(2)
            return
        structure = ndimage.generate_binary_structure(3, cfg.connectivity)
        parent = str(output_path.parent) if output_path.parent.exists() else None
        tmp_dir = tempfile.mkdtemp(prefix=".bioloop-process-", dir=parent)
        try:
            tmp = zarr.create_array(store=tmp_dir, shape=shape, dtype="uint64", chunks=block, fill_value=0)
            n, sizes = 0, [np.zeros(1, np.int64)]
            for box in boxes:  # pass 1: provisional ids, unique over the volume
                local, count = ndimage.label(_read(vol, box) > thr, structure)
                sizes.append(np.bincount(local.ravel(), minlength=count + 1)[1:])
                ids = local.astype(np.uint64)
                ids[local > 0] += np.uint64(n)
                tmp[box] = ids
                n += count
                bar.update(1)
            lut = _final_ids(_face_pairs(tmp, shape, block, structure), np.concatenate(sizes), n, cfg.min_size,
                             dtype, vol.path)
            for box in boxes:  # pass 2: final ids
                ids = lut[np.asarray(tmp[box])]
                out[box] = ids if instance else (ids > 0).astype(np.uint8)
                bar.update(1)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    finally:
        bar.close()


def _face_pairs(tmp, shape, block, structure) -> np.ndarray:
    """(2, K) provisional id pairs that touch across block faces (each face read with a 1-voxel halo)."""
    pairs = [np.zeros((2, 0), np.uint64)]
    steps = np.argwhere(structure) - 1
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        deltas = [tuple(d[others]) for d in steps if d[axis] == 1]
        cores = [range(0, shape[a], block[a]) for a in others]
        for k in range(block[axis], shape[axis], block[axis]):  # the face between planes k-1 and k
            for s0, s1 in itertools.product(*cores):
                core = [(s0, min(s0 + block[others[0]], shape[others[0]])),
                        (s1, min(s1 + block[others[1]], shape[others[1]]))]
                low = np.asarray(tmp[_plane(axis, k - 1, others, core)]).squeeze(axis)
                halo = [(max(a - 1, 0), min(b + 1, shape[o])) for (a, b), o in zip(core, others)]
                high = np.asarray(tmp[_plane(axis, k, others, halo)]).squeeze(axis)
                # zero-pad where the halo left the volume, so high[1 + i, 1 + j] sits opposite low[i, j]
                high = np.pad(high, [(1 - (a - ha), 1 - (hb - b)) for (a, b), (ha, hb) in zip(core, halo)])
                n0, n1 = low.shape
                found = []
                for d0, d1 in deltas:
                    shifted = high[1 + d0:1 + d0 + n0, 1 + d1:1 + d1 + n1]
                    touch = (low > 0) & (shifted > 0)
                    if touch.any():
                        found.append(np.stack([low[touch], shifted[touch]]))
                if found:
                    pairs.append(np.unique(np.concatenate(found, axis=1), axis=1))
    return np.concatenate(pairs, axis=1)


def _plane(axis, index, others, ranges) -> tuple[slice, ...]:
    box = [slice(None)] * 3
    box[axis] = slice(index, index + 1)
    for o, (a, b) in zip(others, ranges):
        box[o] = slice(a, b)
    return tuple(box)


def _final_ids(pairs, sizes, n, min_size, dtype, where) -> np.ndarray:
    """Lookup table provisional id -> final id: merged (union-find), size-filtered, consecutive."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b = pairs.astype(np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n + 1, n + 1))
    count, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp, weights=sizes, minlength=count)
    first = np.full(count, n + 1, np.int64)
    np.minimum.at(first, comp, np.arange(n + 1))
    keep = comp_size >= max(min_size, 1)
    keep[comp[0]] = False  # background
    order = np.flatnonzero(keep)[np.argsort(first[keep], kind="stable")]
    if len(order) > np.iinfo(dtype).max:
        raise DataError.at(where, f"{len(order)} objects do not fit in {dtype.name} labels",
                           fix="set process.dtype = 'uint64'")
    final = np.zeros(count, dtype)
    final[order] = np.arange(1, len(order) + 1, dtype=dtype)
    return final[comp]


# ----------------------------------------------------------------------------- whole-volume paths


def _whole(vol) -> np.ndarray:
    return vol.read((0, 0, 0), vol.spatial_shape)


def _watershed(cfg: ProcessConfig, vol, name: str, dtype) -> np.ndarray:
    """Distance-transform watershed of the whole class volume, seeds at least ``min_distance`` nm apart."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    voxels = int(np.prod(vol.spatial_shape))
    if voxels > cfg.watershed_max_voxels:
        raise DataError.at(vol.path, f"the watershed runs on the whole class volume in memory and this one has "
                           f"{voxels} voxels, more than process.watershed_max_voxels", got=cfg.watershed_max_voxels,
                           fix=f"raise process.watershed_max_voxels (about {voxels * 40 / 2**30:.1f} GiB needed), "
                               "process a smaller region, or set process.watershed = False")
    mask = _whole(vol) > cfg.threshold_for(name)
    structure = ndimage.generate_binary_structure(3, cfg.connectivity)
    components, _ = ndimage.label(mask, structure)
    distance = ndimage.distance_transform_edt(mask, sampling=vol.scale)
    radius = [max(0, int(round(cfg.min_distance / s))) for s in vol.scale]
    footprint = np.ones([2 * r + 1 for r in radius], bool)
    peaks = peak_local_max(distance, footprint=footprint, labels=components, exclude_border=False)
    seeds = np.zeros(mask.shape, bool)
    seeds[tuple(peaks.T)] = True
    markers, _ = ndimage.label(seeds, np.ones((3, 3, 3), bool))  # a plateau of peaks is one seed
    labels = watershed(-distance, markers, mask=mask, connectivity=structure)
    unseeded = mask & (labels == 0)
    if unseeded.any():
        labels[unseeded] = components[unseeded] + labels.max()
    return _relabel(labels, cfg.min_size, dtype, vol.path)


def _relabel(labels: np.ndarray, min_size: int, dtype, where) -> np.ndarray:
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = (ids != 0) & (counts >= max(min_size, 1))
    if keep.sum() > np.iinfo(dtype).max:
        raise DataError.at(where, f"{int(keep.sum())} objects do not fit in {dtype.name} labels",
                           fix="set process.dtype = 'uint64'")
    lut = np.zeros(len(ids), dtype)
    lut[keep] = np.arange(1, keep.sum() + 1, dtype=dtype)
    return lut[inverse.reshape(labels.shape)]


def _apply_func(cfg: ProcessConfig, vol, name: str, dtype) -> np.ndarray:
    """Run the user's process_func on the whole class volume and check what it returns."""
    probabilities = _whole(vol).astype(np.float32, copy=False)
    result = np.asarray(cfg.process_func(probabilities, name, tuple(vol.scale)))
    where = "process.process_func"
    if result.shape != probabilities.shape:
        raise ConfigError.at(where, f"returned labels shaped differently from the '{name}' probabilities "
                             f"{probabilities.shape}", got=result.shape, fix="return one label per input voxel")
    if result.dtype.kind not in "biu":
        raise ConfigError.at(where, f"must return integer labels for class '{name}'", got=str(result.dtype),
                             fix="return e.g. skimage.measure.label(...) or (p > t).astype('uint8')")
    if result.size and result.dtype.kind == "i" and result.min() < 0:
        raise ConfigError.at(where, f"returned negative labels for class '{name}'", got=int(result.min()),
                             fix="use 0 for background and positive ids for objects")
    if dtype == np.uint8:  # a semantic class: any label is foreground
        return (result > 0).astype(np.uint8)
    if result.size and int(result.max()) > np.iinfo(dtype).max:
        raise ConfigError.at(where, f"returned ids too large for {dtype.name}", got=int(result.max()),
                             fix="set process.dtype = 'uint64'")
    return result.astype(dtype)
