"""Blockwise prediction of class probabilities over a volume, a world region or a datasplit's validation crops.

Output: one OME-NGFF image per class (``<output>/<class>``; ``<output>/<crop>/<class>`` for crops)
with the input's voxel size and the region's world translation, in ``output_dtype`` (float32, float16,
or uint8 = round(p * 255); see ``probabilities``) compressed with ``output_compressor``. Blocks are aligned to the region start
and are whole numbers of chunks (concurrent writers never share one). A block reads its input plus
context (fill 0 beyond the volume) and writes only its interior. Same-size models: overlapping patches
on one tile grid per region (results do not depend on blocks or ranks), blended by centre-weighted
windows. Valid-convolution models (``model.output_shape``): tiles on the output grid, each reading
``(size_in - size_out) / 2`` voxels of context. Background threads read the next block and write the
last one. Finished blocks leave markers in ``<output>/.bioloop_blocks``: a rerun with the same settings
skips them, one with other settings is refused; once every block is written the markers are removed
(the output is complete). Block ``i`` runs on rank ``i % world_size``.

Inputs open through :func:`bioloop.data.sources.open_image`, like training: tif/ome-tif (2D images
become one z-slice), plain zarr arrays (voxel size = the model's), OME-NGFF groups or levels, local or
``s3://``. Prediction runs at the checkpoint's classes, patch and voxel size; where they differ from the
config a line says so, and errors they cause name the checkpoint. An ROI reaching outside the volume
is clipped, with a line saying to what.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import zarr
from tqdm.auto import tqdm

from bioloop.data.atomic import atomic_write_text
from bioloop.data.ngff import Volume, create_volume
from bioloop.data.sources import open_image, open_native
from bioloop.engine.progress import progress_enabled
from bioloop.errors import DataError
from bioloop.tasks.segmentation import probabilities as probs_io
from bioloop.tasks.segmentation.data import axis_starts
from bioloop.tasks.segmentation.transforms import Normalizer

_MARKERS = ".bioloop_blocks"
_ACCUMULATOR_BYTES = 1 << 29  # a default block keeps its probability buffers near 512 MiB
_MAX_CHUNK = 128
_WAIT_SECONDS = 1800.0


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


def _axis_window(n: int) -> np.ndarray:
    """One axis of the blending window: highest in the centre, small but non-zero at the edges."""
    position = (np.arange(n, dtype=np.float32) + 0.5) / n
    return (1.0 - 0.9 * np.abs(2 * position - 1) if n > 1 else np.ones(1, np.float32)).astype(np.float32)


def _window(patch: tuple[int, ...]) -> np.ndarray:
    """Blending weights: the outer product of the per-axis windows."""
    weights = np.ones((), np.float32)
    for n in patch:
        weights = np.multiply.outer(weights, _axis_window(n))
    return weights.astype(np.float32)


class _Pass(NamedTuple):
    """One tiling of the volume; shapes in (z, y, x)."""

    patch_in: tuple[int, ...]
    patch_out: tuple[int, ...]
    step: tuple[int, ...]
    drop: int | None  # the volume axis a 2D model does not see
    context: tuple[int, ...]  # input voxels read on each side of a tile's output
    margin: tuple[int, ...]  # voxels tiled around the region so its border sees real context
    window: np.ndarray  # blending weights (ones for valid models)
    axis_windows: tuple  # its per-axis factors: window = their outer product


@dataclass
class _Job:
    """One output image group: a region (voxels) of one raw volume, written to ``<prefix>/<class>``."""

    volume: Volume
    start: tuple[int, ...]
    shape: tuple[int, ...]
    prefix: Path
    root: Path
    grids: list = field(default_factory=list)  # per pass, per axis: tile starts in volume voxels
    arrays: dict = field(default_factory=dict)
    dtype: str = "float32"  # what the class arrays store (output_dtype)


class _Block(NamedTuple):
    index: int
    job: _Job
    start: tuple[int, ...]
    stop: tuple[int, ...]


def predict_volume(cfg, model, *, extras: dict, input: str | None = None, output: str, roi: str | None = None,
                   crops: str | None = None, batch_size: int | None = None,
                   block_shape: tuple[int, ...] | None = None, overlap: float = 0.25, tta: bool = False,
                   orthoplanes: bool = False, overwrite: bool = False, resume: bool = True,
                   device: torch.device | None = None, rank: int = 0, world_size: int = 1,
                   show_progress: bool = True) -> Path:
    """Predict class probabilities for ``input`` (or its ``roi``), or for the ``validate`` crops of the
    datasplit CSV ``crops``, into ``output``; returns the output path.

    ``tta`` averages over flips of every spatial axis of the patch. ``orthoplanes`` (2D models only)
    also predicts the volume viewed along y and along x and averages the three maps: only
    meaningful for near-isotropic voxels. ``rank``/``world_size`` shard the blocks (taken from
    torch.distributed when it is initialised); rank 0 creates the output, the others wait for it.
    """
    classes = list(extras.get("classes") or cfg.classes)
    scale = tuple(float(s) for s in (extras.get("input_scale") or cfg.input_array_info.scale))
    patch = tuple(int(n) for n in (extras.get("input_shape") or cfg.input_array_info.shape))
    spatial_dims = int(extras.get("spatial_dims") or cfg.spatial_dims)
    activation = extras.get("activation") or "sigmoid"
    norm_state = extras.get("normalization") or cfg.normalization
    if activation not in ("sigmoid", "softmax"):
        raise DataError.at("checkpoint extras: activation", "expected 'sigmoid' or 'softmax'", got=activation)
    if not 0 <= overlap < 1:
        raise DataError.at("--overlap", "expected a fraction in [0, 1)", got=overlap, fix="use e.g. 0.25")
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        rank, world_size = dist.get_rank(), dist.get_world_size()
    output = Path(output)
    checkpoint = extras.get("checkpoint") or "the checkpoint"
    if rank == 0:
        _announce(cfg, classes, scale, patch, checkpoint)
    passes = _passes(model, patch, spatial_dims, overlap, orthoplanes)
    try:
        jobs = _jobs(cfg, scale, input, roi, crops, output, say=rank == 0)
    except DataError as exc:
        if extras.get("input_scale") and tuple(scale) != tuple(float(s) for s in cfg.input_array_info.scale):
            raise DataError(f"{exc} (voxel size {tuple(scale)} nm from {checkpoint})") from exc
        raise
    block = _block_shape(block_shape, passes, len(classes), jobs)
    blocks = [_Block(i, *b) for i, b in enumerate(b for job in jobs for b in _job_blocks(job, block))]
    for job in jobs:
        job.grids = [_grid(job, p) for p in passes]
    stored = _stored(cfg)
    fingerprint = json.loads(json.dumps({
        "input": _absolute(input), "crops": _absolute(crops), "scale": scale, "classes": classes,
        "regions": [[job.prefix.relative_to(output).as_posix(), job.start, job.shape] for job in jobs],
        "zarr_format": int(getattr(cfg, "output_zarr_format", 3)), **stored, "patch": patch, "block_shape": block, "overlap": overlap, "tta": tta, "orthoplanes": orthoplanes,
        "activation": activation, "normalization": norm_state, "weights": _digest(model),
        "checkpoint": extras.get("checkpoint"), "step": extras.get("step"), "blocks": len(blocks)}, default=str))
    device = device or next(iter(model.parameters()), torch.empty(0)).device
    runner = _Runner(model.eval(), passes, classes, activation, tta, torch.device(device),
                     batch_size or cfg.validation_batch_size or cfg.batch_size, Normalizer.from_state(norm_state))
    _prepare(output, fingerprint, jobs, classes, scale, _chunk_shape(block), rank=rank, overwrite=overwrite,
             resume=resume, zarr_format=int(getattr(cfg, "output_zarr_format", 3)), **stored)
    done = set(os.listdir(output / _MARKERS))
    mine = [b for b in blocks if b.index % world_size == rank and f"{b.index}.done" not in done]
    bar = tqdm(total=sum(runner.count(b) for b in mine), desc="predict", unit="tile",
               disable=not progress_enabled(not show_progress))
    try:
        _pipeline(mine, runner, bar)
    except DataError as exc:  # e.g. a model whose output does not fit the checkpoint's patch or classes
        raise DataError(f"{exc} (model, patch {patch} and classes from {checkpoint})") from exc
    finally:
        bar.close()
    if distributed:
        dist.barrier()
    if rank == 0 or not distributed:
        _remove_markers_when_complete(output, len(blocks))
    return output


def _stored(cfg) -> dict:
    """``output_dtype`` and ``output_compressor``, checked (configs built in code skip the schema)."""
    dtype = str(getattr(cfg, "output_dtype", "float32"))
    compressor = str(getattr(cfg, "output_compressor", "zstd"))
    if dtype not in probs_io.OUTPUT_DTYPES:
        raise DataError.at("output_dtype", f"expected one of {list(probs_io.OUTPUT_DTYPES)}", got=dtype)
    if compressor not in probs_io.COMPRESSORS:
        raise DataError.at("output_compressor", f"expected one of {list(probs_io.COMPRESSORS)}", got=compressor)
    return {"output_dtype": dtype, "output_compressor": compressor}


def _announce(cfg, classes, scale, patch, checkpoint) -> None:
    """One line per setting the checkpoint overrides: prediction follows the trained model, not the config."""
    from bioloop.tasks.segmentation.targets import output_channels

    said = {"classes": (output_channels(cfg), classes),
            "voxel size (nm)": (tuple(float(s) for s in cfg.input_array_info.scale), tuple(scale)),
            "patch shape": (tuple(int(n) for n in cfg.input_array_info.shape), tuple(patch))}
    for name, (config, trained) in said.items():
        if config != trained:
            print(f"predict: {checkpoint} was trained with {name} {trained}, the config says {config}; "
                  f"predicting with the checkpoint's", file=sys.stderr, flush=True)


def _remove_markers_when_complete(output: Path, n_blocks: int) -> None:
    """Every block written: the resume markers have done their job (a rerun finds a complete output)."""
    markers = output / _MARKERS
    try:
        done = sum(name.endswith(".done") for name in os.listdir(markers))
    except FileNotFoundError:
        return
    if done >= n_blocks:
        shutil.rmtree(markers, ignore_errors=True)


# ----------------------------------------------------------------------------- geometry


def _passes(model, patch, spatial_dims, overlap, orthoplanes) -> list[_Pass]:
    """The tilings: one for a 3D model or a 2D model slice by slice; three for orthoplanes."""
    if orthoplanes and spatial_dims != 2:
        raise DataError.at("--orthoplanes", "needs a 2D model (patches of one z-slice)", got=patch,
                           fix="drop --orthoplanes for 3D models")
    model_in = tuple(patch[1:] if spatial_dims == 2 else patch)
    shape_fn = getattr(model, "output_shape", None)
    model_out = tuple(int(n) for n in shape_fn(model_in)) if callable(shape_fn) else model_in
    blend = model_out == model_in
    views = [(model_in, model_out, None)]
    if spatial_dims == 2:
        (h, w), (ho, wo) = model_in, model_out
        views = [((1, h, w), (1, ho, wo), 0)] + ([((h, 1, w), (ho, 1, wo), 1), ((h, w, 1), (ho, wo, 1), 2)]
                                                  if orthoplanes else [])
    passes = []
    for p_in, p_out, drop in views:
        step = tuple(max(1, int(round(p * (1 - overlap)))) if blend else p for p in p_out)
        passes.append(_Pass(p_in, p_out, step, drop, tuple((i - o) // 2 for i, o in zip(p_in, p_out)),
                            tuple(p // 2 if blend and p > 1 else 0 for p in p_in),
                            _window(p_out) if blend else np.ones(p_out, np.float32),
                            tuple(_axis_window(n) if blend else np.ones(n, np.float32) for n in p_out)))
    return passes


def _jobs(cfg, scale, input, roi, crops, output: Path, say: bool = True) -> list[_Job]:
    options = cfg.storage_options or None
    if (input is None) == (crops is None):
        raise DataError.at("--input/--crops", "give exactly one of them", got={"input": input, "crops": crops},
                           fix="--input predicts a volume (or its --roi); --crops the validate crops of a datasplit")
    if crops is None:
        volume = _open_input(input, scale, options)
        return [_Job(volume, *_region(volume, parse_roi(roi), input, say=say), output, output)]
    from bioloop.data.datasplit import read_datasplit

    jobs = []
    layout = getattr(cfg, "label_layout", "per_class")
    for entry in (e for e in read_datasplit(crops) if e.usage == "validate"):
        volume = _open_input(entry.raw_path, scale, options)
        box = _first_array(entry, scale, options) if layout == "per_class" else open_native(
            entry.gt_path, scale, storage_options=options)
        region = _region(volume, box.roi, entry.gt_path)
        jobs.append(_Job(volume, *region, output / Path(entry.gt_path.rstrip("/")).name, output))
    if not jobs:
        raise DataError.at(str(crops), "the datasplit has no 'validate' rows", fix="mark crops to predict as validate")
    names = [job.prefix.name for job in jobs]
    if len(set(names)) < len(names):
        raise DataError.at(str(crops), "two validate crops share a name, so their outputs would collide",
                           got=sorted({n for n in names if names.count(n) > 1}), fix="rename one crop group")
    return jobs


def _open_input(path, scale, options) -> Volume:
    """The raw image at the model's voxel size, through the reader training uses."""
    volume = open_image(path, scale, storage_options=options)
    if len(volume.spatial_shape) != 3:
        raise DataError.at(str(path), "expected a (z, y, x) volume or a 2D (y, x) image", got=volume.axes,
                           fix="store the image as ZYX or YX")
    if volume.ndim != 3:
        raise DataError.at(str(path), "the image has a channel axis, but the models take one channel",
                           got=dict(zip(volume.axes, volume.shape)), fix="save the channel to predict on its own")
    return volume


def _first_array(entry, scale, options) -> Volume:
    """The crop's box comes from the first class array found in its group (as data.open_crops)."""
    for name in entry.classes:
        try:
            return open_native(f"{entry.gt_path.rstrip('/')}/{name}", scale, storage_options=options)
        except DataError:
            continue
    raise DataError.at(entry.gt_path, "no class array found in the crop group", got=list(entry.classes),
                       fix="check the crop path in the datasplit")


def _region(volume, roi, where, say: bool = False) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Voxel start and shape of the region to predict (the whole volume without a roi); a roi reaching
    outside the volume is clipped to it (with a line saying so when ``say``)."""
    full = tuple(volume.spatial_shape)
    if roi is None:
        return (0,) * len(full), full
    lo = [int(np.floor(v + 0.5)) for v in volume.world_to_voxel(roi[0])]
    # stop is exclusive: the last voxel whose centre lies below roi stop
    hi = [int(np.ceil(v - 0.5)) for v in volume.world_to_voxel(roi[1])]
    clipped = ([max(0, a) for a in lo], [min(n, b) for n, b in zip(full, hi)])
    if any(b <= a for a, b in zip(*clipped)):
        raise DataError.at(str(where), "--roi does not overlap the volume", got=roi,
                           fix=f"the volume spans {volume.roi[0]} to {volume.roi[1]} nm")
    if say and (clipped[0] != lo or clipped[1] != hi):
        start, stop = volume.voxel_to_world(clipped[0]), volume.voxel_to_world(clipped[1])  # as --roi reads them
        text = ",".join(f"{a:g}:{b:g}" for a, b in zip(start, stop))
        print(f"{where}: --roi reaches outside the volume; clipped to {text} nm "
              f"({tuple(b - a for a, b in zip(*clipped))} voxels)", file=sys.stderr, flush=True)
    lo, hi = clipped
    return tuple(lo), tuple(b - a for a, b in zip(lo, hi))


def _block_shape(block_shape, passes, n_classes, jobs) -> tuple[int, ...]:
    """The given block shape, checked; by default a multiple of the tile step near the memory budget."""
    if block_shape is not None:
        if len(block_shape) != 3 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in block_shape):
            raise DataError.at("--block-shape", "expected three positive voxel counts (z, y, x)", got=block_shape)
        return tuple(int(n) for n in block_shape)
    unit = [max(p.step[a] for p in passes) for a in range(3)]
    n = max(1, int((_ACCUMULATOR_BYTES / (4 * (n_classes + 1)) / math.prod(unit)) ** (1 / 3)))
    return tuple(min(u * n, max(job.shape[a] for job in jobs)) for a, u in enumerate(unit))


def _chunk_shape(block) -> tuple[int, ...]:
    """The largest divisor of each block side up to 128 voxels (the whole side when it has none >= 16)."""
    divisors = [max(k for k in range(1, min(b, _MAX_CHUNK) + 1) if b % k == 0) for b in block]
    return tuple(b if d < 16 and b > _MAX_CHUNK else d for b, d in zip(block, divisors))


def _job_blocks(job: _Job, block):
    end = [s + n for s, n in zip(job.start, job.shape)]
    for start in itertools.product(*(range(s, e, b) for s, e, b in zip(job.start, end, block))):
        yield job, start, tuple(min(a + b, e) for a, b, e in zip(start, block, end))


def _grid(job: _Job, p: _Pass) -> list[np.ndarray]:
    """Tile starts per axis over the region plus its margin (clipped to the volume)."""
    grid = []
    for a, n in enumerate(job.volume.spatial_shape):
        lo = max(0, job.start[a] - p.margin[a])
        hi = min(n, job.start[a] + job.shape[a] + p.margin[a])
        grid.append(lo + np.asarray(axis_starts(hi - lo, p.patch_out[a], p.step[a]), dtype=np.int64))
    return grid


def _block_tiles(block: _Block, k: int, p: _Pass) -> list[np.ndarray]:
    """Per axis, the tile starts of pass ``k`` whose output overlaps the block."""
    return [g[(g < b1) & (g + o > b0)] for g, b0, b1, o in zip(block.job.grids[k], block.start, block.stop,
                                                                p.patch_out)]


# ----------------------------------------------------------------------------- output, markers, resume


def _prepare(output: Path, fingerprint, jobs, classes, scale, chunks, *, rank, overwrite, resume,
             zarr_format: int = 3, output_dtype: str = "float32", output_compressor: str = "zstd") -> None:
    """Rank 0 checks/creates the output; the other ranks wait for it; every rank opens the arrays."""
    error = None
    if rank == 0:
        try:
            _create_or_check(output, fingerprint, jobs, classes, scale, chunks, overwrite=overwrite, resume=resume,
                             zarr_format=zarr_format, output_dtype=output_dtype,
                             output_compressor=output_compressor)
        except DataError as exc:
            error = str(exc)
    if dist.is_available() and dist.is_initialized():
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    elif rank != 0:
        deadline = time.monotonic() + _WAIT_SECONDS
        while _read_fingerprint(output) != fingerprint:
            if time.monotonic() > deadline:
                raise DataError.at(str(output), "rank 0 did not create the output with these settings in time",
                                   fix="start rank 0 with the same settings")
            time.sleep(0.5)
    if error:
        raise DataError(error)
    for job in jobs:
        job.arrays = {name: zarr.open_array(str(job.prefix / name / "s0"), mode="r+") for name in classes}
        job.dtype = output_dtype


def _create_or_check(output: Path, fingerprint, jobs, classes, scale, chunks, *, overwrite, resume,
                     zarr_format: int = 3, output_dtype: str = "float32", output_compressor: str = "zstd") -> None:
    exists = DataError.at(str(output), "output already exists", fix="choose another --output or pass --overwrite")
    if output.exists() and overwrite:
        shutil.rmtree(output)
    elif output.exists():
        stored = _read_fingerprint(output)
        if stored is None or not resume:
            raise exists
        if sum(name.endswith(".done") for name in os.listdir(output / _MARKERS)) >= stored.get("blocks", 0):
            raise exists  # complete
        differ = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
        if differ:
            raise DataError.at(str(output), "holds an unfinished prediction made with other settings", got=differ,
                               fix="rerun with the same settings to finish it, or pass --overwrite to start over")
        return
    for job in jobs:
        translation = job.volume.voxel_to_world(job.start)
        for name in classes:
            create_volume(job.prefix / name, job.shape, output_dtype, scale=scale, translation=translation,
                          chunks=chunks, zarr_format=zarr_format,
                          compressors=probs_io.compressors(output_compressor, zarr_format),
                          attributes={"bioloop": {"kind": "probability", "class": name,
                                                  "raw": _absolute(job.volume.path),
                                                  **probs_io.attributes(output_dtype)}})
    # written last: its presence tells the other ranks that every array exists
    meta = {"zarr_format": 3, "node_type": "group", "attributes": {"bioloop_predict": fingerprint}}
    _atomic_write(output / _MARKERS / "zarr.json", json.dumps(meta, indent=1))


def _read_fingerprint(output: Path):
    try:
        return json.loads((output / _MARKERS / "zarr.json").read_text())["attributes"]["bioloop_predict"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _atomic_write(path: Path, text: str) -> None:
    # markers and metadata: losing one to a power cut only costs recomputing a block, so no fsync
    atomic_write_text(path, text, fsync=False)


def _write_block(block: _Block, probs: np.ndarray, classes) -> None:
    """Write a block's interior into every class array, then mark the block finished."""
    box = tuple(slice(a - s, b - s) for a, b, s in zip(block.start, block.stop, block.job.start))
    for c, name in enumerate(classes):
        block.job.arrays[name][box] = probs_io.encode(probs[c], block.job.dtype)
    _atomic_write(block.job.root / _MARKERS / f"{block.index}.done", "")


# ----------------------------------------------------------------------------- compute


@dataclass
class _Runner:
    """Reads a block's input box, runs the model over its tiles and blends them into probabilities."""

    model: torch.nn.Module
    passes: list[_Pass]
    classes: list[str]
    activation: str
    tta: bool
    device: torch.device
    batch_size: int
    norm: object

    def count(self, block: _Block) -> int:
        return sum(math.prod(len(t) for t in _block_tiles(block, k, p)) for k, p in enumerate(self.passes))

    def read(self, block: _Block) -> tuple[list[int], np.ndarray]:
        """The normalised input box all the block's tiles read from (runs in the reader thread)."""
        lo, hi = [math.inf] * 3, [-math.inf] * 3
        for k, p in enumerate(self.passes):
            for a, starts in enumerate(_block_tiles(block, k, p)):
                lo[a] = min(lo[a], int(starts[0]) - p.context[a])
                hi[a] = max(hi[a], int(starts[-1]) - p.context[a] + p.patch_in[a])
        raw = block.job.volume.read(lo, [b - a for a, b in zip(lo, hi)], fill=0)
        if self.device.type == "cuda":  # page-locked, so the copy to the GPU runs asynchronously
            out = torch.empty(raw.shape, dtype=torch.float32, pin_memory=True).numpy()
        else:
            out = np.empty(raw.shape, np.float32)
        slab = max(1, (1 << 20) // max(1, raw[0].size))  # bounds the normaliser's temporaries
        for z in range(0, raw.shape[0], slab):
            out[z:z + slab] = self.norm(raw[z:z + slab])
        return lo, out

    def compute(self, block: _Block, data, bar) -> np.ndarray:
        """(C, *block shape) probabilities, averaged over the passes."""
        origin, raw = data
        x = torch.from_numpy(raw).to(self.device, non_blocking=True)
        with torch.inference_mode():
            total = self._blend(block, 0, self.passes[0], x, origin, bar)
            for k in range(1, len(self.passes)):
                total += self._blend(block, k, self.passes[k], x, origin, bar)
            if len(self.passes) > 1:
                total /= len(self.passes)
        return total.cpu().numpy()

    def _blend(self, block, k, p, x, origin, bar) -> torch.Tensor:
        tiles = _block_tiles(block, k, p)
        out_lo = [int(t[0]) for t in tiles]
        out_shape = [int(t[-1]) + n - int(t[0]) for t, n in zip(tiles, p.patch_out)]
        acc = torch.zeros((len(self.classes), *out_shape), dtype=torch.float32, device=self.device)
        window = torch.from_numpy(np.asarray(p.window, np.float32)).to(self.device)
        # the tiles form a product grid and the window is separable, so the summed weights are the
        # outer product of per-axis sums (3 small vectors instead of one full-size add per tile)
        sums = []
        for t, lo, n, w in zip(tiles, out_lo, out_shape, p.axis_windows):
            total = np.zeros(n, np.float32)
            for s in t.tolist():
                total[s - lo:s - lo + len(w)] += w
            sums.append(total)
        weight = torch.from_numpy(np.multiply.outer(np.multiply.outer(sums[0], sums[1]), sums[2])).to(self.device)
        starts = list(itertools.product(*(t.tolist() for t in tiles)))
        for first in range(0, len(starts), self.batch_size):
            chunk = starts[first:first + self.batch_size]
            batch = torch.stack([x[tuple(slice(s - c - o, s - c - o + n) for s, c, o, n in
                                         zip(start, p.context, origin, p.patch_in))] for start in chunk])
            for start, tile in zip(chunk, self._forward(batch[:, None], p)):
                box = tuple(slice(s - o, s - o + n) for s, o, n in zip(start, out_lo, p.patch_out))
                acc[(slice(None), *box)].addcmul_(tile, window)
            bar.update(len(chunk))
        inner = tuple(slice(a - o, b - o) for a, b, o in zip(block.start, block.stop, out_lo))
        if not bool((weight[inner] > 0).all()):  # a tiling bug: never write holes silently
            raise RuntimeError(f"internal error: block {block.index} {block.start}-{block.stop} has unpredicted voxels")
        return acc[(slice(None), *inner)].div_(weight[inner])

    def _forward(self, batch: torch.Tensor, p: _Pass) -> torch.Tensor:
        """Probabilities (B, C, *patch_out) for (B, 1, *patch_in), averaged over flips with tta."""
        if p.drop is not None:
            batch = batch.squeeze(p.drop + 2)
        spatial = range(2, batch.ndim)
        flips = [f for r in range(len(spatial) + 1) for f in itertools.combinations(spatial, r)] if self.tta else [()]
        total = None
        for axes in flips:
            logits = self.model(batch.flip(axes) if axes else batch)
            logits = (logits[0] if isinstance(logits, (list, tuple)) else logits).float()
            probs = torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=1)
            probs = probs.flip(axes) if axes else probs
            total = probs if total is None else total.add_(probs)
        if len(flips) > 1:
            total /= len(flips)
        total = total if p.drop is None else total.unsqueeze(p.drop + 2)
        expected = (batch.shape[0], len(self.classes), *p.patch_out)
        if tuple(total.shape) != expected:
            raise DataError.at("model", f"returned probabilities of shape {tuple(total.shape)} for patches of "
                               f"{p.patch_in}; expected {expected}", fix="a model that crops its output must "
                               "expose output_shape(input_shape), and out_channels must equal the classes")
        return total


def _pipeline(blocks: list[_Block], runner: _Runner, bar) -> None:
    """Compute blocks in order while one thread reads the next block's input and another writes the last output."""
    if not blocks:
        return
    reader = ThreadPoolExecutor(1, thread_name_prefix="bioloop-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="bioloop-write")
    try:
        reading, writing = reader.submit(runner.read, blocks[0]), None
        for i, block in enumerate(blocks):
            data = reading.result()
            if i + 1 < len(blocks):
                reading = reader.submit(runner.read, blocks[i + 1])
            probs = runner.compute(block, data, bar)
            if writing is not None:
                writing.result()  # at most one block waits to be written; its errors surface here
            writing = writer.submit(_write_block, block, probs, runner.classes)
        writing.result()
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)


def _digest(model) -> str:
    """A short hash of the model's class and weights (part of the resume fingerprint)."""
    h = hashlib.blake2b(type(model).__qualname__.encode(), digest_size=16)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _absolute(path) -> str | None:
    return None if path is None else str(path) if "://" in str(path) else os.path.abspath(path)
