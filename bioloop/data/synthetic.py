"""A synthetic FIB-SEM-like dataset in the CellMap layout, for the demo and the tests.

``make_em_dataset(root)`` writes ``root/synthetic_em.zarr`` (raw at ``recon-1/em/fibsem-uint8``,
label crops at ``recon-1/labels/groundtruth/crop{N}/{nuc,mito}``) and ``root/datasplit.csv``.
Cells hold nuclei (granular interior, dark envelope, peripheral chromatin) and mitochondria
(small dark elongated bodies with cristae stripes) among distractors (vesicles, cell membranes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
from scipy import ndimage

from bioloop.data.datasplit import CropEntry, write_datasplit
from bioloop.data.ngff import write_volume

CLASSES = ("nuc", "mito")
RAW_NAME = "recon-1/em/fibsem-uint8"
CROP_GROUP = "recon-1/labels/groundtruth"
_RAW_OFFSET_VOX = (2, 5, 7)  # raw voxel 0 sits at this many voxels from the world origin


@attrs.frozen
class SyntheticDataset:
    """Where the files went and what they hold (all coordinates in nm, start = centre of voxel 0)."""

    zarr_path: str
    raw_path: str
    datasplit_path: str
    classes: tuple[str, ...]
    crops: list  # (name, usage, roi_start_nm, roi_stop_nm); usage "train" | "validate" | "test"
    test_crop_path: str
    test_roi: tuple[tuple[float, ...], tuple[float, ...]]
    scale: tuple[float, ...]
    raw_translation: tuple[float, ...]
    shape: tuple[int, ...]


def make_em_dataset(root: str | os.PathLike, *, shape: Sequence[int] = (24, 384, 384),
                    scale: Sequence[float] = (8.0, 8.0, 8.0), seed: int = 0, zarr_format: int = 3) -> SyntheticDataset:
    """Write the synthetic volume, its label crops and datasplit.csv under ``root``; deterministic per seed."""
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(n) for n in shape)
    scale = tuple(float(s) for s in scale)
    zarr_path = str(root / "synthetic_em.zarr")
    raw_translation = tuple(k * s for k, s in zip(_RAW_OFFSET_VOX, scale))

    raw, labels = _render(shape, scale, np.random.default_rng(seed))
    write_volume(f"{zarr_path}/{RAW_NAME}", raw, scale=scale, translation=raw_translation, levels=2,
                 zarr_format=zarr_format, overwrite=True)

    crops, entries = [], []
    for n, (usage, box, classes) in enumerate(_crop_plan(shape), start=1):
        name = f"crop{n}"
        start_nm = tuple(t + b.start * s for t, b, s in zip(raw_translation, box, scale))
        stop_nm = tuple(t + b.stop * s for t, b, s in zip(raw_translation, box, scale))
        for cls in classes:
            write_volume(f"{zarr_path}/{CROP_GROUP}/{name}/{cls}", labels[cls][box], scale=scale,
                         translation=start_nm, zarr_format=zarr_format, overwrite=True, labels=True,
                         attributes=_cellmap_attrs(cls))
        crops.append((name, usage, start_nm, stop_nm))
        if usage != "test":
            entries.append(CropEntry(usage, f"{zarr_path}/{RAW_NAME}", f"{zarr_path}/{CROP_GROUP}/{name}", CLASSES))
    datasplit_path = str(root / "datasplit.csv")
    write_datasplit(datasplit_path, entries)
    test = next(c for c in crops if c[1] == "test")
    return SyntheticDataset(zarr_path=zarr_path, raw_path=f"{zarr_path}/{RAW_NAME}", datasplit_path=datasplit_path,
                            classes=CLASSES, crops=crops, test_crop_path=f"{zarr_path}/{CROP_GROUP}/{test[0]}",
                            test_roi=(test[2], test[3]), scale=scale, raw_translation=raw_translation, shape=shape)


def _crop_plan(shape) -> list[tuple[str, tuple[slice, ...], tuple[str, ...]]]:
    """Six non-overlapping tiles (2 along y, 3 along x, full z): 4 train (one nuc-only), 1 validate, 1 test."""
    _, ny, nx = shape
    ys = [0, ny // 2, ny]
    xs = [0, nx // 3, 2 * nx // 3, nx]
    tiles = [(slice(0, shape[0]), slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1])) for i in range(2) for j in range(3)]
    plan = ["train", "train", "validate", "train", "train", "test"]
    return [(u, t, ("nuc",) if n == 3 else CLASSES) for n, (u, t) in enumerate(zip(plan, tiles))]


def _cellmap_attrs(cls: str) -> dict:
    return {"cellmap": {"annotation": {"class_name": cls, "annotation_type": {
        "type": "semantic_segmentation", "encoding": {"absent": 0, "present": 1}}}}}


# ----------------------------------------------------------------------------- rendering


def _render(shape, scale, rng) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return the uint8 raw volume and binary uint8 label volumes for every class."""
    aniso = scale[2] / scale[0]  # z voxels per y/x voxel of physical length
    size = float(np.clip(min(shape[1:]) / 384.0, 0.25, 1.0))  # shrink objects in small volumes
    nuclei = _place_nuclei(shape, aniso, size, rng)
    depth = _nuclei_depth(shape, nuclei)  # px inside (>0) / outside (<0) the nearest nucleus
    nuc = depth >= 0
    mito, along, mito_depth = _mitochondria(shape, aniso, size, depth, rng)
    vesicles = _vesicles(shape, aniso, size, depth, mito, rng)
    cell, membrane = _cells(shape, nuclei, depth)
    cell_shift = rng.uniform(-6, 6, max(len(nuclei), 1)).astype(np.float32)[cell]  # cells differ in brightness,
    nuc_shift = rng.uniform(-4, 4, max(len(nuclei), 1)).astype(np.float32)[cell]  # and so do nuclei
    yy, xx = np.mgrid[0:shape[1], 0:shape[2]].astype(np.float32) / max(shape[1:])
    shading = 10.0 * np.cos(2.0 * yy + 1.0) * np.cos(1.5 * xx - 0.5)  # uneven illumination

    sig_z = lambda s: (max(s * aniso, 0.3), s, s)  # noqa: E731  (blur in physical units)
    fine = _field(rng, shape, sig_z(1.0))
    coarse = _field(rng, shape, sig_z(6.0))
    granular = _field(rng, shape, sig_z(0.7))
    clumps = _field(rng, shape, sig_z(2.5))

    img = 166.0 + cell_shift + 5.0 * fine + 10.0 * coarse  # cytoplasm
    nuc_val = (146.0 + nuc_shift + 26.0 * granular - 28.0 * np.clip(clumps - 0.8, 0, None)
               - 26.0 * np.exp(-np.clip(depth, 0, None) / 5.0))  # granular, chromatin clumps, peripheral chromatin
    img = np.where(nuc, nuc_val, img)
    img -= 70.0 * np.exp(-((depth - 1.0) ** 2) / (2 * 1.1**2))  # nuclear envelope
    mito_val = 112.0 - 30.0 * np.cos(2 * np.pi * along / 5.0) - 35.0 * np.exp(-mito_depth / 1.2)
    img = np.where(mito, mito_val, img)
    img[vesicles] = 118.0
    img -= 60.0 * membrane
    img += shading
    img = ndimage.gaussian_filter(img, sig_z(0.9))
    img += 13.0 * rng.standard_normal(shape, dtype=np.float32)
    raw = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return raw, {"nuc": nuc.astype(np.uint8), "mito": mito.astype(np.uint8)}


def _field(rng, shape, sigma) -> np.ndarray:
    """Smoothed gaussian noise rescaled to unit standard deviation."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return f / max(float(f.std()), 1e-6)


def _place_nuclei(shape, aniso, size, rng) -> list[tuple]:
    """Non-overlapping nuclei: one tried per crop tile first (so every crop sees one), then random fill."""
    nz, ny, nx = shape
    tiles = [(y0, y1, x0, x1) for _, (_, ys, xs), _ in _crop_plan(shape)
             for y0, y1, x0, x1 in [(ys.start, ys.stop, xs.start, xs.stop)]]
    target = max(2, round(0.30 * ny * nx / (math.pi * (45 * size) ** 2)))
    nuclei: list[tuple] = []
    for attempt in range(60 * target):
        if len(nuclei) >= target and attempt >= 20 * len(tiles):
            break
        r = rng.uniform(30, 60) * size
        if attempt < 20 * len(tiles):  # 20 tries inside each tile, in turn
            y0, y1, x0, x1 = tiles[attempt // 20]
            cy, cx = rng.uniform(y0 + 0.3 * (y1 - y0), y0 + 0.7 * (y1 - y0)), rng.uniform(x0 + 0.3 * (x1 - x0),
                                                                                           x0 + 0.7 * (x1 - x0))
            if any(y0 <= n[1] < y1 and x0 <= n[2] < x1 for n in nuclei):
                continue
        else:
            cy, cx = rng.uniform(0.6 * r, ny - 0.6 * r), rng.uniform(0.6 * r, nx - 0.6 * r)
        if any(math.hypot(cy - n[1], cx - n[2]) < r * 1.2 + n[3] * 1.2 + 10 * size for n in nuclei):
            continue
        ry, rx = r * rng.uniform(0.85, 1.15), r * rng.uniform(0.85, 1.15)
        rz = r * aniso * rng.uniform(0.8, 1.2)
        nuclei.append((rng.uniform(0, nz), cy, cx, r, rz, ry, rx, rng.uniform(0, np.pi),
                       int(rng.integers(2, 5)), rng.uniform(0, 2 * np.pi)))
    return nuclei


def _nuclei_depth(shape, nuclei) -> np.ndarray:
    """Approximate signed distance in px to the nearest nucleus surface (positive inside)."""
    depth = np.full(shape, -1e3, dtype=np.float32)
    for cz, cy, cx, r, rz, ry, rx, theta, lobes, phase in nuclei:
        reach = 1.35 * max(ry, rx) + 8
        box = tuple(slice(max(0, int(c - h)), min(n, int(c + h) + 1))
                    for c, h, n in zip((cz, cy, cx), (1.35 * rz + 8, reach, reach), shape))
        z, y, x = np.ogrid[box]
        dy, dx = y - cy, x - cx
        u = dy * math.cos(theta) + dx * math.sin(theta)
        v = -dy * math.sin(theta) + dx * math.cos(theta)
        d = np.sqrt(((z - cz) / rz) ** 2 + (u / ry) ** 2 + (v / rx) ** 2)
        d = d * (1.0 + 0.05 * np.sin(lobes * np.arctan2(u, v) + phase))
        depth[box] = np.maximum(depth[box], ((1.0 - d) * r).astype(np.float32))
    return depth


def _mitochondria(shape, aniso, size, nuc_depth, rng):
    """Elongated ellipsoids (~10 x 25 px) in the cytoplasm; returns mask, position along the axis, depth."""
    nz, ny, nx = shape
    mask = np.zeros(shape, bool)
    along = np.zeros(shape, np.float32)
    mdepth = np.zeros(shape, np.float32)
    target = max(3, round(50 * nz * ny * nx / (24 * 384 * 384)))
    placed = 0
    for _ in range(20 * target):
        if placed >= target:
            break
        rs, rl = rng.uniform(4.0, 6.0) * max(size, 0.6), rng.uniform(10.0, 16.0) * max(size, 0.6)
        c = np.array([rng.uniform(0, nz), rng.uniform(rl, ny - rl), rng.uniform(rl, nx - rl)])
        ci = tuple(min(int(v), n - 1) for v, n in zip(c, shape))
        if nuc_depth[ci] > -(rl + 4):
            continue
        phi, elev = rng.uniform(0, np.pi), rng.normal(0, 0.25)
        unit = (math.sin(elev), math.cos(elev) * math.sin(phi), math.cos(elev) * math.cos(phi))  # physical px
        half = (rl * aniso + 2, rl + 2, rl + 2)
        box = tuple(slice(max(0, int(cc - h)), min(n, int(cc + h) + 1)) for cc, h, n in zip(c, half, shape))
        if mask[box].any():
            continue
        z, y, x = np.ogrid[box]
        pz, py, px = (z - c[0]) / aniso, y - c[1], x - c[2]
        t = pz * unit[0] + py * unit[1] + px * unit[2]
        perp2 = np.maximum(pz**2 + py**2 + px**2 - t**2, 0)
        e = np.sqrt((t / rl) ** 2 + perp2 / rs**2)
        inside = (e <= 1.0) & (nuc_depth[box] < -3)
        mask[box] |= inside
        along[box] = np.where(inside, t, along[box])
        mdepth[box] = np.where(inside, (1.0 - e) * rs, mdepth[box])
        placed += 1
    return mask, along, mdepth


def _vesicles(shape, aniso, size, nuc_depth, mito, rng) -> np.ndarray:
    """Small round dark bodies: distractors that look a little like mitochondria but have no stripes."""
    nz, ny, nx = shape
    mask = np.zeros(shape, bool)
    for _ in range(max(3, round(90 * nz * ny * nx / (24 * 384 * 384)))):
        r = rng.uniform(2.0, 4.5) * max(size, 0.6)
        c = (rng.uniform(0, nz), rng.uniform(0, ny), rng.uniform(0, nx))
        box = tuple(slice(max(0, int(cc - h)), min(n, int(cc + h) + 1))
                    for cc, h, n in zip(c, (r * aniso + 1, r + 1, r + 1), shape))
        z, y, x = np.ogrid[box]
        mask[box] |= ((z - c[0]) / aniso) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
    return mask & (nuc_depth < -3) & ~ndimage.binary_dilation(mito, iterations=2)


def _cells(shape, nuclei, nuc_depth) -> tuple[np.ndarray, np.ndarray]:
    """Cells as the power diagram of the nuclei (its borders never cut a nucleus): 2D cell index and membranes."""
    ny, nx = shape[1:]
    if len(nuclei) < 2:
        return np.zeros((ny, nx), np.int64), np.zeros(shape, np.float32)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    c = np.array([(n[1], n[2]) for n in nuclei], np.float32)
    r2 = np.array([n[3] ** 2 for n in nuclei], np.float32)
    power = (y[None] - c[:, 0, None, None]) ** 2 + (x[None] - c[:, 1, None, None]) ** 2 - r2[:, None, None]
    order = np.argsort(power, axis=0)[:2]
    p1, p2 = np.take_along_axis(power, order, 0)
    gap = np.hypot(c[order[0], 0] - c[order[1], 0], c[order[0], 1] - c[order[1], 1])
    dist = (p2 - p1) / (2 * np.maximum(gap, 1e-3))  # euclidean distance to the nearest border, px
    line = np.exp(-(dist**2) / (2 * 0.9**2)).astype(np.float32)
    return order[0], np.broadcast_to(line, shape) * (nuc_depth < -4)


# ----------------------------------------------------------------------------- dense instance labels


@attrs.frozen
class SyntheticCells:
    """Dense instance labels (every voxel belongs to a cell) and their raw image; coordinates in nm."""

    zarr_path: str
    raw_path: str
    datasplit_path: str
    test_labels_path: str
    test_roi: tuple[tuple[float, ...], tuple[float, ...]]
    scale: tuple[float, ...]
    shape: tuple[int, ...]
    n_cells: int


def make_cells_dataset(root: str | os.PathLike, *, shape: Sequence[int] = (1, 192, 192), cell_size: float = 14.0,
                       scale: Sequence[float] = (8.0, 8.0, 8.0), seed: int = 0,
                       zarr_format: int = 3) -> SyntheticCells:
    """Touching cells filling the volume, like dense EM neuron labels: ``root/cells.zarr`` holds raw at
    ``raw`` and instance labels per crop at ``labels/crop{1,2,3}``; ``root/datasplit.csv`` lists crop 1
    (the first two thirds along y) for training and crop 2 for validation; crop 3 is held out.

    Cells are the Voronoi regions of random points in a smoothly warped space (irregular borders,
    every cell touching its neighbours, each one connected region); the raw image darkens cell borders
    (thin membranes, some fainter than others) and gives each cell its own brightness and texture.
    ``cell_size`` is the mean spacing of the points in voxels (in y/x).
    """
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(n) for n in shape)
    scale = tuple(float(s) for s in scale)
    rng = np.random.default_rng(seed)
    labels, raw = _render_cells(shape, scale, cell_size, rng)
    zarr_path = str(root / "cells.zarr")
    write_volume(f"{zarr_path}/raw", raw, scale=scale, translation=(0.0, 0.0, 0.0), zarr_format=zarr_format,
                 overwrite=True)
    ny, nx = shape[1], shape[2]
    boxes = [(slice(0, shape[0]), slice(0, 2 * ny // 3), slice(0, nx)),
             (slice(0, shape[0]), slice(2 * ny // 3, ny), slice(0, nx // 2)),
             (slice(0, shape[0]), slice(2 * ny // 3, ny), slice(nx // 2, nx))]
    entries, rois = [], []
    for n, (usage, box) in enumerate(zip(("train", "validate", "test"), boxes), start=1):
        start = tuple(b.start * s for b, s in zip(box, scale))
        write_volume(f"{zarr_path}/labels/crop{n}", labels[box], scale=scale, translation=start,
                     zarr_format=zarr_format, overwrite=True, labels=True)
        rois.append((start, tuple(b.stop * s for b, s in zip(box, scale))))
        if usage != "test":
            entries.append(CropEntry(usage, f"{zarr_path}/raw", f"{zarr_path}/labels/crop{n}", ("cell",)))
    datasplit_path = str(root / "datasplit.csv")
    write_datasplit(datasplit_path, entries)
    return SyntheticCells(zarr_path=zarr_path, raw_path=f"{zarr_path}/raw", datasplit_path=datasplit_path,
                          test_labels_path=f"{zarr_path}/labels/crop3", test_roi=rois[2], scale=scale, shape=shape,
                          n_cells=int(labels.max()))


def _render_cells(shape, scale, cell_size, rng) -> tuple[np.ndarray, np.ndarray]:
    """uint32 dense labels 1..N (consecutive) and the uint8 raw image."""
    aniso = np.asarray(scale, float) / min(scale)
    extent = np.asarray(shape, float) * aniso  # physical size in voxels of the finest axis
    volume = float(np.prod([e for e in extent if e > 1]))
    dims = sum(1 for n in shape if n > 1)
    n_points = max(2, int(round(volume / cell_size ** dims)))
    points = rng.uniform(0, 1, (n_points, 3)) * extent
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * a for n, a in zip(shape, aniso)], indexing="ij")
    smooth = tuple(max(0.3, 0.6 * cell_size / a) for a in aniso)
    # a smooth warp of space before the Voronoi partition: irregular but connected cells
    coords = np.stack([g + (0.35 * cell_size * _field(rng, shape, smooth) if n > 1 else 0)
                       for g, n in zip(grids, shape)], axis=-1).reshape(-1, 3)
    from scipy.spatial import cKDTree

    labels = (cKDTree(points).query(coords)[1] + 1).reshape(shape)
    from skimage.measure import label

    # every cell one connected region (a warped Voronoi cell may fall apart), ids 1..N
    labels = label(labels, background=0, connectivity=1).astype(np.uint32)
    border = np.zeros(shape, bool)
    for axis in range(3):
        if shape[axis] > 1:
            a = np.swapaxes(labels, 0, axis)
            edge = np.zeros(a.shape, bool)
            edge[1:] |= a[1:] != a[:-1]
            edge[:-1] |= a[1:] != a[:-1]
            border |= np.swapaxes(edge, 0, axis)
    to_border = ndimage.distance_transform_edt(~border, sampling=aniso).astype(np.float32)
    n = int(labels.max())
    strength = rng.uniform(0.45, 1.0, n + 1).astype(np.float32)  # some membranes fainter than others
    brightness = rng.uniform(-18, 18, n + 1).astype(np.float32)
    sigma = tuple(max(0.3, 0.8 / a) for a in aniso)
    img = 165.0 + brightness[labels] + 8.0 * _field(rng, shape, tuple(2 * s for s in sigma))
    img -= 85.0 * strength[labels] * np.exp(-to_border ** 2 / (2 * 0.8 ** 2))
    img = ndimage.gaussian_filter(img, sigma) + 14.0 * rng.standard_normal(shape).astype(np.float32)
    return labels, np.clip(np.rint(img), 0, 255).astype(np.uint8)
