"""Crop data held in memory: read once, in parallel, chunk-aligned, within one byte bound.

Training draws thousands of small patches from a few regions (a crop's label arrays, its cost map,
the raw box around it). ``hold(requests, bound)`` decides once, at start-up, how each region is
served, and returns a volume with the read API of :class:`bioloop.data.ngff.Volume` for each:

- when every region fits in ``bound`` bytes, each is read whole into memory (by a pool of threads,
  one region per task) and patch reads are numpy slices;
- otherwise regions are held whole in request order while they fit in half the bound, and the
  rest are read through :class:`ChunkedVolume`: blocks aligned to the source's storage chunks,
  kept in a least-recently-used cache of ``(bound - held) / processes`` bytes per process
  (``processes`` = the DataLoader processes that read patches). One line says so.

Either way the memory these regions take after start-up is at most ``bound`` however many crops
there are. Forked DataLoader workers share the regions held whole (copy-on-write pages that are
never written); each keeps its own chunk cache.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import attrs
import numpy as np

from bioloop.data.ngff import Volume

DEFAULT_FRACTION = 0.25  # of physical memory, when the setting is None
HELD_SHARE = 0.5  # of the bound, for regions held whole once not everything fits
DEFAULT_BLOCK = 64  # voxels per axis of a chunk-cache block when the source has no chunks
READ_THREADS = 8


def physical_memory() -> int:
    """Bytes of physical memory (a cgroup limit when lower), 8 GiB when unknown."""
    total = 8 << 30
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text.isdigit():
            total = min(total, int(text))
    except OSError:
        pass
    return int(total)


def default_cache_bytes() -> int:
    """The bound used when ``cache_bytes`` is None: a quarter of physical memory, shared by the
    training processes of one machine (``LOCAL_WORLD_SIZE`` under torchrun)."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return int(physical_memory() * DEFAULT_FRACTION) // local


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class Region:
    """A box of ``volume`` (spatial voxel ``start`` and ``shape``; non-spatial axes whole) to hold."""

    volume: Any
    start: tuple[int, ...]
    shape: tuple[int, ...]

    @classmethod
    def whole(cls, volume) -> Region:
        return cls(volume, (0,) * len(volume.spatial_shape), tuple(volume.spatial_shape))

    @property
    def nbytes(self) -> int:
        full = list(volume_shape(self.volume))
        for k, d in enumerate(self.volume.spatial_dims):
            full[d] = self.shape[k]
        return int(math.prod(full)) * np.dtype(self.volume.dtype).itemsize


def volume_shape(volume) -> tuple[int, ...]:
    return tuple(volume.shape)


@attrs.frozen
class HeldVolume(Volume):
    """A Volume whose array is in memory: a read inside the array returns a read-only view (no copy)."""

    def read(self, start_vox: Sequence[int], shape_vox: Sequence[int], fill: float = 0) -> np.ndarray:
        start, shape = self._full_box(start_vox, shape_vox)
        if all(0 <= b and b + n <= size for b, n, size in zip(start, shape, self.array.shape)):
            view = self.array[tuple(slice(b, b + n) for b, n in zip(start, shape))]
            view.flags.writeable = False
            return view
        return super().read(start_vox, shape_vox, fill)


def in_memory(volume, start, data: np.ndarray) -> HeldVolume:
    """The region of ``volume`` starting at spatial voxel ``start`` as an in-memory Volume."""
    return HeldVolume(data, tuple(volume.scale), tuple(volume.voxel_to_world(start)), tuple(volume.axes),
                      volume.path, tuple(volume.spatial_dims))


class ChunkCache:
    """A least-recently-used store of numpy blocks bounded by their total bytes (one per process)."""

    def __init__(self, capacity: int):
        self.capacity = max(0, int(capacity))
        self.blocks: OrderedDict[Any, np.ndarray] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0
        self._pid = os.getpid()

    def get(self, key, load: Callable[[], np.ndarray]) -> np.ndarray:
        if self._pid != os.getpid():  # a forked worker starts with its own, empty cache
            self.blocks, self.nbytes, self._pid = OrderedDict(), 0, os.getpid()
        block = self.blocks.get(key)
        if block is not None:
            self.blocks.move_to_end(key)
            self.hits += 1
            return block
        self.misses += 1
        block = load()
        if block.nbytes <= self.capacity:
            self.blocks[key] = block
            self.nbytes += block.nbytes
            while self.nbytes > self.capacity:
                _, old = self.blocks.popitem(last=False)
                self.nbytes -= old.nbytes
        return block


def _storage_chunks(volume) -> tuple[int, ...]:
    """Spatial chunk shape of the stored array (the resampled/tif fallback: DEFAULT_BLOCK per axis)."""
    chunks = getattr(getattr(volume, "array", None), "chunks", None)
    spatial = tuple(volume.spatial_shape)
    if isinstance(chunks, tuple) and len(chunks) == len(volume.shape) and not isinstance(volume.array, np.ndarray):
        return tuple(max(1, int(chunks[d])) for d in volume.spatial_dims)
    return tuple(min(DEFAULT_BLOCK, max(1, n)) for n in spatial)


class ChunkedVolume:
    """``volume`` read through a :class:`ChunkCache` in blocks aligned to its storage chunks.

    Same read API and geometry as the source; a patch read touches only the blocks it overlaps,
    each loaded from storage once while it stays in the cache.
    """

    roi = Volume.roi
    world_to_voxel = Volume.world_to_voxel
    voxel_to_world = Volume.voxel_to_world
    read_world = Volume.read_world
    _full_box = Volume._full_box
    _filled_box = Volume._filled_box

    def __init__(self, source, cache: ChunkCache, block: Sequence[int] | None = None):
        self.source = source
        self.cache = cache
        self.block = tuple(int(b) for b in (block or _storage_chunks(source)))
        self.scale, self.translation = tuple(source.scale), tuple(source.translation)
        self.axes, self.spatial_dims, self.path = tuple(source.axes), tuple(source.spatial_dims), source.path
        self.spatial_shape = tuple(source.spatial_shape)
        self.shape, self.ndim, self.dtype = tuple(source.shape), len(source.shape), np.dtype(source.dtype)

    def __repr__(self) -> str:
        return f"ChunkedVolume({self.path!r}, blocks {self.block})"

    def _load(self, index: tuple[int, ...]) -> np.ndarray:
        start = [i * b for i, b in zip(index, self.block)]
        shape = [min(b, n - s) for s, b, n in zip(start, self.block, self.spatial_shape)]
        return np.ascontiguousarray(self.source.read(start, shape, fill=0))

    def read(self, start_vox: Sequence[int], shape_vox: Sequence[int], fill: float = 0) -> np.ndarray:
        start, shape, out = self._filled_box(start_vox, shape_vox, fill)
        s_start = [start[d] for d in self.spatial_dims]
        s_stop = [start[d] + shape[d] for d in self.spatial_dims]
        for d in range(self.ndim):  # non-spatial axes: only whole reads are served
            if d not in self.spatial_dims and (start[d] != 0 or shape[d] != self.shape[d]):
                return self.source.read(start_vox, shape_vox, fill)
        lo = [max(0, a) for a in s_start]
        hi = [min(b, n) for b, n in zip(s_stop, self.spatial_shape)]
        if any(h <= lo_ for lo_, h in zip(lo, hi)):
            return out
        ranges = [range(a // b, (h - 1) // b + 1) for a, h, b in zip(lo, hi, self.block)]
        for index in np.ndindex(*[len(r) for r in ranges]):
            key = tuple(r[i] for r, i in zip(ranges, index))
            block = self.cache.get((id(self), key), lambda key=key: self._load(key))
            b0 = [k * b for k, b in zip(key, self.block)]
            src, dst = [slice(None)] * self.ndim, [slice(None)] * self.ndim
            for k, d in enumerate(self.spatial_dims):
                a = max(lo[k], b0[k])
                z = min(hi[k], b0[k] + block.shape[d])
                src[d] = slice(a - b0[k], z - b0[k])
                dst[d] = slice(a - s_start[k], z - s_start[k])
            out[tuple(dst)] = block[tuple(src)]
        return out


@dataclass
class Plan:
    """How ``hold`` serves the regions: which are held whole, the chunk cache per process."""

    total: int
    bound: int
    held: list[int]
    chunked: list[int]
    chunk_capacity: int


def plan(sizes: Sequence[int], bound: int, processes: int = 1) -> Plan:
    """Hold every region whole when they fit; else whole ones in order up to half the bound, the rest chunked."""
    total = int(sum(sizes))
    if total <= bound:
        return Plan(total, bound, list(range(len(sizes))), [], 0)
    held, used = [], 0
    for i, n in enumerate(sizes):
        if used + n <= bound * HELD_SHARE:
            held.append(i)
            used += n
        else:
            break  # keep the order simple: a prefix of the requests is held whole
    chunked = [i for i in range(len(sizes)) if i not in set(held)]
    return Plan(total, bound, held, chunked, max(0, bound - used) // max(1, processes))


def hold(requests: Sequence[Region], bound: int, *, processes: int = 1, say: Callable[[str], None] = print,
         bar: Callable[[int], Any] | None = None) -> list[Any]:
    """A volume serving each request within ``bound`` bytes (see the module docstring).

    Whole regions are read in parallel threads; ``bar(total)`` may return a tqdm-like object that
    is advanced once per region read.
    """
    requests = list(requests)
    p = plan([r.nbytes for r in requests], int(bound), processes)
    if p.chunked:
        held_bytes = sum(requests[i].nbytes for i in p.held)
        say(f"data cache: the crops need {format_bytes(p.total)}, more than cache_bytes "
            f"({format_bytes(bound)}): {len(p.held)} of {len(requests)} arrays held whole "
            f"({format_bytes(held_bytes)}), the other {len(p.chunked)} read in storage-chunk blocks through "
            f"an LRU cache of {format_bytes(p.chunk_capacity)} per process (raise cache_bytes to hold everything)")
    out: list[Any] = [None] * len(requests)
    progress = bar(len(p.held)) if bar is not None else None

    def read(i: int):
        r = requests[i]
        return i, in_memory(r.volume, r.start, np.ascontiguousarray(r.volume.read(r.start, r.shape, fill=0)))

    try:
        if p.held:
            with ThreadPoolExecutor(min(READ_THREADS, len(p.held)), thread_name_prefix="bioloop-cache") as pool:
                for i, volume in pool.map(read, p.held):
                    out[i] = volume
                    if progress is not None:
                        progress.update(1)
    finally:
        if progress is not None:
            progress.close()
    if p.chunked:
        cache = ChunkCache(p.chunk_capacity)
        for i in p.chunked:
            out[i] = ChunkedVolume(requests[i].volume, cache)
    return out
