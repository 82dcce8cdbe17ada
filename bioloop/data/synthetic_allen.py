"""A synthetic Allen Cell Segmenter training folder: bright blobs in noisy 3D tifs with labels and cost maps.

``make_allen_dataset(root)`` writes, per image ``k``: ``img{k}.tif`` (uint16 OME-TIFF), ``img{k}_GT.tif``
(uint8 0/1 ImageJ tif) and ``img{k}_CM.tif`` (float32 ImageJ tif: 1 inside and far from objects,
``border_weight`` on the voxels next to an object boundary). All carry the voxel size ``scale`` (nm).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

BACKGROUND, FOREGROUND, NOISE = 300.0, 1500.0, 120.0


def make_allen_dataset(root: str | os.PathLike, n: int = 3, shape: Sequence[int] = (24, 96, 96), seed: int = 0, *,
                       scale: Sequence[float] = (290.0, 108.0, 108.0),
                       border_weight: float = 3.0) -> list[tuple[str, str, str]]:
    """Write ``n`` (image, _GT, _CM) tif triplets under ``root``; deterministic per seed."""
    import tifffile

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(v) for v in shape)
    z, y, x = (float(v) for v in scale)
    rng = np.random.default_rng(seed)
    ome_meta = {"axes": "ZYX", "PhysicalSizeZ": z / 1e3, "PhysicalSizeY": y / 1e3, "PhysicalSizeX": x / 1e3,
                "PhysicalSizeZUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeXUnit": "µm"}
    ij = {"resolution": (1e3 / x, 1e3 / y), "metadata": {"axes": "ZYX", "spacing": z / 1e3, "unit": "um"}}
    out = []
    for k in range(int(n)):
        mask = _blobs(shape, rng)
        image = _render(mask, rng)
        cost = _cost_map(mask, border_weight)
        names = [root / f"img{k}.tif", root / f"img{k}_GT.tif", root / f"img{k}_CM.tif"]
        tifffile.imwrite(names[0], image, ome=True, metadata=ome_meta)
        tifffile.imwrite(names[1], mask.astype(np.uint8), imagej=True, **ij)
        tifffile.imwrite(names[2], cost, imagej=True, **ij)
        out.append(tuple(str(p) for p in names))
    return out


def _blobs(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random ellipsoids (a few voxels thick in z, wider in y/x), some touching the border."""
    nz, ny, nx = shape
    zz, yy, xx = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    mask = np.zeros(shape, bool)
    count = max(3, int(round(nx * ny / 800)))
    for _ in range(count):
        rz, ry, rx = rng.uniform(0.12, 0.25) * nz + 1, rng.uniform(0.05, 0.12) * ny + 2, rng.uniform(0.05, 0.12) * nx + 2
        cz, cy, cx = rng.uniform(0, nz), rng.uniform(0, ny), rng.uniform(0, nx)
        mask |= ((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return mask


def _render(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blurred bright objects with uneven brightness over a dim background, plus noise."""
    texture = ndimage.gaussian_filter(rng.normal(1.0, 0.3, mask.shape), 2.0).astype(np.float32)
    signal = ndimage.gaussian_filter(mask.astype(np.float32), (0.5, 1.0, 1.0))
    image = BACKGROUND + (FOREGROUND - BACKGROUND) * signal * np.clip(texture, 0.6, 1.4)
    image += rng.normal(0.0, NOISE, mask.shape)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def _cost_map(mask: np.ndarray, border_weight: float) -> np.ndarray:
    """1 everywhere, ``border_weight`` on voxels within one voxel of an object boundary (in y/x)."""
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndimage.generate_binary_structure(2, 1)
    border = ndimage.binary_dilation(mask, plane) & ~ndimage.binary_erosion(mask, plane, border_value=1)
    cost = np.ones(mask.shape, np.float32)
    cost[border] = float(border_weight)
    return cost
