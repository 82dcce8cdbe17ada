"""One entry point for image and label sources: tif, OME-NGFF zarr, plain zarr arrays, local or remote.

``open_image(path, scale)`` returns a :class:`bioloop.data.ngff.Volume` (or a
:class:`bioloop.data.resample.ResampledVolume`, which reads the same way):

- ``*.tif`` / ``*.tiff`` / ``*.ome.tif``: :func:`bioloop.data.tif.open_tif` (voxel size from the file);
- an OME-NGFF image group (0.4 ``multiscales`` or 0.5 ``ome`` attribute), or one level's array:
  the level whose voxel size is ``scale``;
- a plain zarr array: ``scale`` *is* its voxel size (1 nm when None).

When ``scale`` is given and no level (nor the tif's own voxel size) matches it within
``SCALE_REL_TOL``, the result is a resampled view of the nearest finer level (the finest if all
are coarser): nearest-neighbour for ``labels=True``, else linear (area averaging when shrinking),
and one line on stderr says so: ``<path>: voxel size (..) nm resampled to (..) nm (factor ..)``.
``s3://`` and other fsspec URLs take ``storage_options`` such as ``{"anon": True}``,
``{"endpoint_url": ...}`` or ``{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}``.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Sequence

from bioloop.data.ngff import Volume, open_levels, open_volume
from bioloop.data.resample import ResampledVolume
from bioloop.data.tif import is_tif, open_tif
from bioloop.errors import DataError

SCALE_REL_TOL = 0.01  # a level within 1% of the requested voxel size is used as is
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def open_image(path: str | os.PathLike, scale: Sequence[float] | float | None = None, *,
               storage_options: dict | None = None, labels: bool = False) -> Volume | ResampledVolume:
    """Open ``path`` at voxel size ``scale`` (nm per spatial axis), resampling when no level has it."""
    path = str(path)
    if is_tif(path):
        levels = [open_tif(path, scale, storage_options=storage_options)]
    else:
        levels = open_levels(path, storage_options=storage_options)
        if levels is None:  # a plain zarr array: the caller's scale is its voxel size
            return open_volume(path, scale, storage_options=storage_options)
    if scale is None:
        return levels[0]
    want = _requested(scale, levels[0], path)
    for level in levels:
        if _matches(level.scale, want):
            return level
    source = _nearest_finer(levels, want)
    factor = tuple(round(a / b, 4) for a, b in zip(source.scale, want))
    print(f"{path}: voxel size {_nm(source.scale)} nm resampled to {_nm(want)} nm (factor {factor} per axis, "
          f"{'nearest' if labels else 'linear'})", file=sys.stderr, flush=True)
    return ResampledVolume(source, want, labels=labels)


def _nm(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def open_native(path: str | os.PathLike, scale: Sequence[float] | float | None = None, *,
                storage_options: dict | None = None) -> Volume:
    """Open ``path`` on its own voxel grid, never resampled: an OME-NGFF image's first (finest) level, a tif
    at the voxel size its metadata states, a plain zarr array at ``scale``. ``scale`` fills in only what the
    file does not say (a tif without voxel-size metadata, a plain array)."""
    path = str(path)
    if is_tif(path):
        return open_tif(path, scale, storage_options=storage_options)
    levels = open_levels(path, storage_options=storage_options)
    if levels is None:
        return open_volume(path, None if scale is None else _requested_plain(scale, path, storage_options),
                           storage_options=storage_options)
    return levels[0]


def _requested_plain(scale, path, storage_options):
    """A (z, y, x) voxel size for a plain array; (y, x) for a 2D one."""
    values = (float(scale),) * 3 if isinstance(scale, (int, float)) else tuple(float(v) for v in scale)
    probe = open_volume(path, None, storage_options=storage_options)
    n = len(probe.spatial_dims)
    return values[-n:] if len(values) > n else values


def exists(path: str | os.PathLike, storage_options: dict | None = None) -> bool:
    """Whether a file, zarr array or group exists at ``path`` (local or an fsspec URL)."""
    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if not _URL.match(path):
        return os.path.exists(path)
    try:
        from fsspec.core import url_to_fs

        fs, inner = url_to_fs(path, **(storage_options or {}))
        return bool(fs.exists(inner.rstrip("/")))
    except ImportError as exc:
        raise DataError.at(path, f"cannot open remote path ({exc})", fix="install fsspec and s3fs") from exc
    except FileNotFoundError:
        return False
    except (PermissionError, OSError) as exc:
        raise DataError.at(path, f"cannot reach the remote path ({exc})",
                           fix="check the URL and the storage_options (credentials, endpoint_url, anon)") from exc


def _requested(scale, first, path: str) -> tuple[float, ...]:
    n = len(first.scale)
    values = (float(scale),) * n if isinstance(scale, (int, float)) else tuple(float(v) for v in scale)
    if len(values) == n - 1 and first.spatial_shape[0] == 1:  # (y, x) for a 2D image stored as (1, y, x)
        values = (first.scale[0], *values)
    if len(values) != n or not all(v > 0 and math.isfinite(v) for v in values):
        raise DataError.at(path, f"voxel size needs {n} positive values (nm)", got=values,
                           fix="give one voxel size per spatial axis")
    return values


def _matches(have: Sequence[float], want: Sequence[float]) -> bool:
    return all(math.isclose(a, b, rel_tol=SCALE_REL_TOL) for a, b in zip(have, want))


def _nearest_finer(levels: list, want: tuple[float, ...]):
    finer = [lv for lv in levels if all(a <= b * (1 + SCALE_REL_TOL) for a, b in zip(lv.scale, want))]
    if finer:
        return max(finer, key=lambda lv: math.prod(lv.scale))
    return min(levels, key=lambda lv: math.prod(lv.scale))
