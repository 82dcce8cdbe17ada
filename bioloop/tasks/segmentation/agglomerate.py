"""`bioloop process` for instance targets: predicted boundaries / affinities / distances -> instance ids.

Two methods, both blockwise (``process.block_shape``) with ``process.halo`` voxels of context, and
consistent across blocks:

- **seeded watershed** (boundaries, distance, and affinities with ``agglomeration = "watershed"``).
  An elevation map E in [0, 1] is low inside objects and high on their borders (the boundary
  probability; 1 - the lowest affinity of a voxel's nearest-neighbour edges; 1 - the distance target). Seeds are the
  connected regions of ``mask & (E < seed_threshold)``, labelled per block and merged across block
  faces with the same union-find as connected components, so every seed has one global id. Each
  block then floods E from the global seeds over its block plus halo, inside the mask, and keeps
  its interior: an object crossing a face carries the same seed id on both sides.
- **mutex watershed** (affinities, ``agglomeration = "mutex_watershed"``, the default) with the
  ``mwatershed`` package over every offset (long-range ones included) on the block plus halo;
  the fragments of neighbouring blocks are merged when the mean nearest-neighbour affinity across
  their shared face exceeds ``merge_threshold``, a rule that does not depend on block order.

The foreground mask is the ``<class>_fg`` channel above ``process.thresholds`` (boundaries, affinities
with a foreground channel), every voxel (affinities without one: dense labels), or the distance target
above tanh(0.5 / distance_scale), halfway between background (0) and an object's border layer.

Final ids are consecutive in the order of the first voxel of each object (scan order of blocks),
so reruns give identical ids; ``min_size`` uses the global object sizes. Temporary per-block ids go
to zarr arrays on disk next to the output and are removed afterwards.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage
from tqdm.auto import tqdm

from bioloop.data.ngff import create_volume, open_volume
from bioloop.tasks.segmentation.probabilities import decoded
from bioloop.engine.progress import progress_enabled
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.segmentation.targets import InstanceTargets


def targets_from_state(state: dict) -> InstanceTargets:
    return InstanceTargets(kind=state["kind"], offsets=[tuple(o) for o in state["offsets"]],
                           foreground=bool(state["foreground"]), boundary_width=int(state["boundary_width"]),
                           distance_scale=float(state["distance_scale"]))


def process_instances(cfg, state: dict, name: str, *, input: str, output: str, overwrite: bool,
                      storage_options=None, show_progress: bool = True, zarr_format: int = 3) -> None:
    """Turn the predicted target channels of class ``name`` into ``<output>/<name>`` instance ids."""
    from bioloop.tasks.segmentation.process import _block

    targets = targets_from_state(state)
    dims = int(state["spatial_dims"])
    names = targets.channels(name, dims)
    vols = [decoded(open_volume(f"{str(input).rstrip('/')}/{ch}", None, storage_options=storage_options),
                    f"{str(input).rstrip('/')}/{ch}", storage_options) for ch in names]
    shape = tuple(vols[0].spatial_shape)
    for vol in vols:
        if len(vol.spatial_shape) != 3 or tuple(vol.spatial_shape) != shape:
            raise DataError.at(vol.path, f"expected (z, y, x) channels shaped like {names[0]} {shape}",
                               got=vol.spatial_shape, fix="process the output of one `bioloop predict` run")
    offsets = [(0, *o) if dims == 2 else tuple(o) for o in targets.offsets_for(dims)]
    plan = _Plan(cfg, targets, offsets, dims, name, vols, _block(cfg, shape))
    dtype = np.dtype(cfg.dtype)
    out = create_volume(f"{str(output).rstrip('/')}/{name}", shape, dtype, scale=vols[0].scale,
                        translation=vols[0].translation, chunks=plan.block, overwrite=overwrite,
                        storage_options=storage_options, attributes={"bioloop": {
                            "kind": "instance", "class": name, "instance_targets": targets.kind}},
                        zarr_format=zarr_format, image_label={})
    mutex = targets.kind == "affinities" and cfg.agglomeration == "mutex_watershed"
    parent = Path(output).parent
    tmp_dir = tempfile.mkdtemp(prefix=".bioloop-agglomerate-", dir=str(parent) if parent.exists() else None)
    bar = tqdm(total=(2 if mutex else 3) * len(plan.boxes), desc=f"process {name}", unit="block",
               disable=not progress_enabled(not show_progress))
    try:
        ids = plan.mutex(tmp_dir, bar) if mutex else plan.watershed(tmp_dir, bar)
        sizes = np.zeros(1, np.int64)
        for box in plan.boxes:
            counts = np.bincount(np.asarray(ids[box]).ravel().astype(np.int64))
            sizes = _add(sizes, counts)
        lut = _consecutive(sizes, cfg.min_size, dtype, vols[0].path)
        for box in plan.boxes:
            out[box] = lut[np.asarray(ids[box]).astype(np.int64)]
            bar.update(1)
    finally:
        bar.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(b) > len(a):
        a, b = b, a
    a = a.copy()
    a[:len(b)] += b
    return a


def _consecutive(sizes: np.ndarray, min_size: int, dtype, where) -> np.ndarray:
    """id -> 1..K in id order for ids with at least ``min_size`` voxels (0 stays background)."""
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    if int(keep.sum()) > np.iinfo(dtype).max:
        raise DataError.at(where, f"{int(keep.sum())} objects do not fit in {dtype.name} labels",
                           fix="set process.dtype = 'uint64'")
    lut = np.zeros(len(sizes), dtype)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=dtype)
    return lut


class _Plan:
    """Geometry and per-block maps shared by both methods."""

    def __init__(self, cfg, targets, offsets, dims, name, vols, block):
        from bioloop.tasks.segmentation.process import _boxes

        self.cfg, self.targets, self.offsets, self.dims, self.name = cfg, targets, offsets, dims, name
        self.vols, self.block = vols, block
        self.shape = tuple(vols[0].spatial_shape)
        self.boxes = _boxes(self.shape, block)
        structure = ndimage.generate_binary_structure(3, cfg.connectivity)
        if dims == 2:  # a 2D model: objects live in their slice
            structure[0] = structure[2] = False
        self.structure = structure
        reach = np.abs(np.asarray(offsets)).max(0)
        self.halo = tuple(int(max(cfg.halo, r + 1)) if n > 1 and not (dims == 2 and a == 0) else 0
                          for a, (r, n) in enumerate(zip(reach, self.shape)))
        self.fg = targets.channels(name, dims).index(f"{name}_fg") if f"{name}_fg" in targets.channels(
            name, dims) else None
        if targets.kind == "affinities":
            axes = [a for a in range(3) if self.shape[a] > 1 and not (dims == 2 and a == 0)]
            units = {next(a for a, o in enumerate(off) if o) for off in offsets
                     if sum(abs(o) for o in off) == 1 and sum(off) == 1}
            missing = [a for a in axes if a not in units]
            if missing:
                need = [tuple(int(a == m) for a in range(3))[3 - dims:] for m in missing]
                raise ConfigError.at("instance_targets.offsets", "the agglomeration needs the nearest-neighbour "
                                     "offset along every axis of the volume", got=targets.offsets_for(dims),
                                     fix=f"add {', '.join(map(str, need))} and retrain")

    # ------------------------------------------------------------------ reading
    def read(self, box, halo) -> tuple[np.ndarray, tuple[slice, ...], tuple[slice, ...]]:
        """(C, *extended box) channels; the extended box (volume voxels); the interior within it."""
        lo = [max(0, s.start - h) for s, h in zip(box, halo)]
        hi = [min(n, s.stop + h) for s, h, n in zip(box, halo, self.shape)]
        data = np.stack([v.read(lo, [b - a for a, b in zip(lo, hi)]) for v in self.vols]).astype(np.float32)
        ext = tuple(slice(a, b) for a, b in zip(lo, hi))
        inner = tuple(slice(s.start - a, s.stop - a) for s, a in zip(box, lo))
        return data, ext, inner

    def maps(self, data, ext) -> tuple[np.ndarray, np.ndarray]:
        """Elevation E (low inside objects) and the foreground mask of channel data."""
        kind, cfg = self.targets.kind, self.cfg
        thr = cfg.threshold_for(self.name)
        if kind == "boundaries":
            return data[1], data[0] > thr
        if kind == "distance":
            return 1.0 - data[0], data[0] > np.tanh(0.5 / self.targets.distance_scale)
        nearest = [k for k, o in enumerate(self.offsets) if sum(abs(a) for a in o) == 1]
        lowest = np.ones(data.shape[1:], np.float32)
        for k in nearest:  # both edges of each voxel along the offset's axis; one cut edge makes a border
            axis, step = next((a, o) for a, o in enumerate(self.offsets[k]) if o)
            own = data[k].copy()
            end = ext[axis].stop == self.shape[axis] if step > 0 else ext[axis].start == 0
            if end:  # edges leaving the volume are not predictions of anything
                edge = [slice(None)] * 3
                edge[axis] = -1 if step > 0 else 0
                own[tuple(edge)] = 1.0
            lowest = np.minimum(lowest, own)
            src, dst = [slice(None)] * 3, [slice(None)] * 3
            src[axis], dst[axis] = (slice(None, -1), slice(1, None)) if step > 0 else (slice(1, None), slice(None, -1))
            lowest[tuple(dst)] = np.minimum(lowest[tuple(dst)], data[k][tuple(src)])
        elevation = 1.0 - lowest
        mask = data[self.fg] > thr if self.fg is not None else np.ones(elevation.shape, bool)
        return elevation, mask

    def seed_threshold(self) -> float:
        if self.cfg.seed_threshold is not None:
            return float(self.cfg.seed_threshold)
        if self.targets.kind == "distance":  # seeds at least 2.5 voxels inside
            return float(1.0 - np.tanh(2.5 / self.targets.distance_scale))
        return 0.3

    # ------------------------------------------------------------------ seeded watershed
    def watershed(self, tmp_dir, bar):
        from skimage.segmentation import watershed

        from bioloop.tasks.segmentation.process import _face_pairs, _final_ids

        seeds = zarr.create_array(store=f"{tmp_dir}/seeds", shape=self.shape, dtype="uint64", chunks=self.block,
                                  fill_value=0)
        n, sizes, t = 0, [np.zeros(1, np.int64)], self.seed_threshold()
        one = tuple(1 if h else 0 for h in self.halo)
        for box in self.boxes:  # pass 1: seed regions, provisional ids unique over the volume
            data, ext, inner = self.read(box, one)
            elevation, mask = self.maps(data, ext)
            local, count = ndimage.label((mask & (elevation < t))[inner], self.structure)
            sizes.append(np.bincount(local.ravel(), minlength=count + 1)[1:])
            ids = local.astype(np.uint64)
            ids[local > 0] += np.uint64(n)
            seeds[box] = ids
            n += count
            bar.update(1)
        lut = _final_ids(_face_pairs(seeds, self.shape, self.block, self.structure), np.concatenate(sizes), n, 0,
                         np.dtype(np.uint64), self.vols[0].path)
        labels = zarr.create_array(store=f"{tmp_dir}/labels", shape=self.shape, dtype="uint64", chunks=self.block,
                                   fill_value=0)
        unseeded = 0
        for box in self.boxes:  # pass 2: flood from the global seeds over block + halo, keep the interior
            data, ext, inner = self.read(box, self.halo)
            elevation, mask = self.maps(data, ext)
            markers = lut[np.asarray(seeds[ext]).astype(np.int64)]
            flooded = watershed(elevation, markers.astype(np.int64), mask=mask, connectivity=self.structure)
            flooded = flooded[inner].astype(np.uint64)
            unseeded += int(np.count_nonzero(mask[inner] & (flooded == 0)))
            labels[box] = flooded
            bar.update(1)
        if unseeded:
            print(f"process {self.name}: {unseeded} foreground voxels reach no seed within process.halo = "
                  f"{self.cfg.halo} voxels and are left as background; lower process.seed_threshold or raise "
                  "process.halo", file=sys.stderr)
        return labels

    # ------------------------------------------------------------------ mutex watershed
    def mutex(self, tmp_dir, bar):
        try:
            import mwatershed
        except ImportError:
            raise ConfigError.at("process.agglomeration", "'mutex_watershed' needs the mwatershed package",
                                 got="mutex_watershed", fix="pip install mwatershed, "
                                 "or set process.agglomeration = 'watershed'") from None
        from bioloop.tasks.segmentation.process import _final_ids

        nearest = {next(a for a, o in enumerate(off) if o): k for k, off in enumerate(self.offsets)
                   if sum(abs(a) for a in off) == 1 and sum(off) == 1}
        bias = self.cfg.mutex_bias
        bias = np.asarray(bias if isinstance(bias, (list, tuple)) else [bias] * len(self.offsets), np.float64)
        if len(bias) != len(self.offsets):
            raise ConfigError.at("process.mutex_bias", f"needs one value per affinity offset ({len(self.offsets)})",
                                 got=list(bias), fix="give one number, or a list as long as instance_targets.offsets")
        ids = zarr.create_array(store=f"{tmp_dir}/fragments", shape=self.shape, dtype="uint64", chunks=self.block,
                                fill_value=0)
        n, sizes = 0, [np.zeros(1, np.int64)]
        for box in self.boxes:  # pass 1: fragments per block (block + halo, interior kept)
            data, ext, inner = self.read(box, self.halo)
            _, mask = self.maps(data, ext)
            affs = data[:len(self.offsets)].astype(np.float64) - bias[:, None, None, None]
            affs[:, ~mask] = -1.0  # background voxels repel everything
            if self.dims == 2:  # slice by slice: a 2D model has no z edges
                frag = np.stack([mwatershed.agglom(affs[:, z], [o[1:] for o in self.offsets])
                                 for z in range(affs.shape[1])])
                frag = frag + (np.arange(frag.shape[0], dtype=np.int64) * (frag.max() + 1))[:, None, None]
            else:
                frag = mwatershed.agglom(affs, [list(o) for o in self.offsets])
            frag = np.where(mask, frag, 0)[inner]
            local = _first_seen(frag)
            count = int(local.max()) if local.size else 0
            sizes.append(np.bincount(local.ravel(), minlength=count + 1)[1:])
            out = local.astype(np.uint64)
            out[local > 0] += np.uint64(n)
            ids[box] = out
            n += count
            bar.update(1)
        pairs = self._merge_pairs(ids, nearest)
        lut = _final_ids(pairs, np.concatenate(sizes), n, 0, np.dtype(np.uint64), self.vols[0].path)
        merged = zarr.create_array(store=f"{tmp_dir}/merged", shape=self.shape, dtype="uint64", chunks=self.block,
                                   fill_value=0)
        for box in self.boxes:
            merged[box] = lut[np.asarray(ids[box]).astype(np.int64)]
        return merged

    def _merge_pairs(self, ids, nearest) -> np.ndarray:
        """(2, K) fragment pairs across block faces whose mean affinity across the face exceeds merge_threshold."""
        found = [np.zeros((2, 0), np.uint64)]
        for axis in range(3):
            k = nearest.get(axis)
            if k is None:
                continue  # no affinity across this axis (a 2D model along z): never merged
            for face in range(self.block[axis], self.shape[axis], self.block[axis]):
                low = [slice(None)] * 3
                high = [slice(None)] * 3
                low[axis], high[axis] = slice(face - 1, face), slice(face, face + 1)
                a = np.asarray(ids[tuple(low)]).ravel()
                b = np.asarray(ids[tuple(high)]).ravel()
                aff = np.asarray(self.vols[k].read([s.start or 0 for s in low],
                                                   [1 if i == axis else n for i, n in enumerate(self.shape)]))
                aff = aff.ravel()
                both = (a > 0) & (b > 0)
                if not both.any():
                    continue
                pair, inverse = np.unique(np.stack([a[both], b[both]]), axis=1, return_inverse=True)
                inverse = inverse.ravel()
                mean = np.bincount(inverse, weights=aff[both]) / np.bincount(inverse)
                found.append(pair[:, mean > self.cfg.merge_threshold])
        return np.concatenate(found, axis=1)


def _first_seen(labels: np.ndarray) -> np.ndarray:
    """Relabel non-zero ids to 1..K in the order of their first voxel (scan order): deterministic ids."""
    flat = labels.ravel()
    values, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    new = np.zeros(len(values), np.int64)
    kept = order[values[order] != 0]
    new[kept] = np.arange(1, len(kept) + 1)
    return new[inverse].reshape(labels.shape)
