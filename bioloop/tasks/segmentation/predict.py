"""Tiled prediction over a volume: overlapping patches, blended, every voxel written.

Output: one OME-NGFF image per class (``<output>/<class>``, float32 probabilities) with the
input's voxel size and the world translation of the predicted region, so napari and
neuroglancer overlay it on the raw volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bioloop.data.ngff import create_volume, open_volume
from bioloop.engine.progress import progress_enabled
from bioloop.errors import DataError
from bioloop.tasks.segmentation.data import normalize, tile_offsets


def parse_roi(text: str | None, where: str = "--roi") -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """'z0:z1,y0:y1,x0:x1' in world units (nm) -> (start, stop)."""
    if not text:
        return None
    try:
        pairs = [part.split(":") for part in text.split(",")]
        start = tuple(float(a) for a, _ in pairs)
        stop = tuple(float(b) for _, b in pairs)
    except ValueError:
        raise DataError.at(where, "expected 'z0:z1,y0:y1,x0:x1' in nm", got=text) from None
    if len(start) != 3 or any(b <= a for a, b in zip(start, stop)):
        raise DataError.at(where, "expected three non-empty ranges 'z0:z1,y0:y1,x0:x1' in nm", got=text)
    return start, stop


def _window(patch: tuple[int, ...]) -> np.ndarray:
    """Blending weights: highest in the patch centre, small but non-zero at its edges."""
    axes = []
    for n in patch:
        if n == 1:
            axes.append(np.ones(1, np.float32))
            continue
        position = (np.arange(n, dtype=np.float32) + 0.5) / n
        axes.append(1.0 - 0.9 * np.abs(2 * position - 1))
    return np.einsum(",".join("abc"[: len(axes)]) + "->" + "abc"[: len(axes)], *axes) if axes else np.ones(())


def predict_volume(cfg, model, *, extras: dict, input: str, output: str, roi: str | None = None,
                   batch_size: int | None = None, overlap: float = 0.25, overwrite: bool = False,
                   device: torch.device | None = None, show_progress: bool = True) -> Path:
    """Predict class probabilities for ``input`` (a raw OME-NGFF group/array) into ``output``."""
    classes = list(extras.get("classes") or cfg.classes)
    scale = tuple(extras.get("input_scale") or cfg.input_array_info.scale)
    patch = tuple(int(n) for n in (extras.get("input_shape") or cfg.input_array_info.shape))
    mode = extras.get("normalization") or cfg.normalization
    spatial_dims = int(extras.get("spatial_dims") or cfg.spatial_dims)
    output_path = Path(output)
    if output_path.exists() and not overwrite:
        raise DataError.at(str(output_path), "output already exists", fix="choose another --output or pass --overwrite")
    volume = open_volume(input, scale, storage_options=cfg.storage_options or None)
    roi_start, roi_shape = _region(volume, parse_roi(roi), input)
    # predict a margin of real context around the region where the volume has it, so voxels at
    # the region's border are seen from the middle of a tile, as in an uninterrupted volume
    margin = [p // 2 if p > 1 else 0 for p in patch]
    start = tuple(max(0, a - m) for a, m in zip(roi_start, margin))
    stop = tuple(min(n, a + s + m) for a, s, m, n in zip(roi_start, roi_shape, margin, volume.spatial_shape))
    shape = tuple(b - a for a, b in zip(start, stop))
    strides = tuple(max(1, int(round(p * (1 - overlap)))) if p > 1 else 1 for p in patch)
    offsets = tile_offsets(shape, patch, strides)
    probs = np.zeros((len(classes), *shape), np.float32)
    weights = np.zeros(shape, np.float32)
    window = _window(patch)
    device = device or next(model.parameters()).device
    batch_size = batch_size or cfg.validation_batch_size or cfg.batch_size
    model.eval()
    bar = tqdm(total=len(offsets), desc="predict", unit="tile", disable=not progress_enabled(not show_progress))
    with torch.no_grad():
        for first in range(0, len(offsets), batch_size):
            chunk = offsets[first:first + batch_size]
            tiles = np.stack([normalize(volume.read(tuple(s + o for s, o in zip(start, off)), patch, fill=0), mode)
                              for off in chunk])
            x = torch.from_numpy(tiles[:, None])
            if spatial_dims == 2:
                x = x[:, :, 0]
            y = torch.sigmoid(model(x.to(device)).float()).cpu().numpy()
            if spatial_dims == 2:
                y = y[:, :, None]
            for off, tile in zip(chunk, y):
                box = tuple(slice(o, min(o + p, n)) for o, p, n in zip(off, patch, shape))
                inner = tuple(slice(0, b.stop - b.start) for b in box)
                probs[(slice(None), *box)] += tile[(slice(None), *inner)] * window[inner]
                weights[box] += window[inner]
            bar.update(len(chunk))
    bar.close()
    if not np.all(weights > 0):  # would mean a tiling bug; never write holes silently
        raise DataError.at(str(output_path), "internal error: some voxels were not predicted")
    probs /= weights[None]
    inner = tuple(slice(a - b, a - b + s) for a, b, s in zip(roi_start, start, roi_shape))
    translation = volume.voxel_to_world(roi_start)
    for c, name in enumerate(classes):
        array = create_volume(output_path / name, roi_shape, "float32", scale=scale, translation=translation,
                              overwrite=overwrite, attributes={"bioloop": {"kind": "probability", "class": name}})
        array[...] = probs[c][inner]
    return output_path


def _region(volume, roi, where) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Voxel start and shape of the region to predict (the whole volume without a roi)."""
    full = tuple(volume.spatial_shape)
    if roi is None:
        return (0,) * len(full), full
    lo = [int(np.floor(v + 0.5)) for v in volume.world_to_voxel(roi[0])]
    # stop is exclusive: the last voxel whose centre lies below roi stop
    hi = [int(np.ceil(v - 0.5)) for v in volume.world_to_voxel(roi[1])]
    lo = [max(0, a) for a in lo]
    hi = [min(n, b) for n, b in zip(full, hi)]
    if any(b <= a for a, b in zip(lo, hi)):
        raise DataError.at(str(where), "--roi does not overlap the volume", got=roi,
                           fix=f"the volume spans {volume.roi[0]} to {volume.roi[1]} nm")
    return tuple(lo), tuple(b - a for a, b in zip(lo, hi))
