"""OME-NGFF zarr volumes: open a level by voxel size, read boxes in voxel or world (nm) coordinates, write.

Coordinates follow OME-NGFF: ``translation`` is the world position (nm) of the centre of voxel 0,
and ``world = translation + index * scale`` per spatial axis. Groups are read as v0.4 (zarr v2,
``multiscales`` attribute) or v0.5 (zarr v3, ``ome`` attribute); plain arrays take their voxel size
from the caller. ``s3://`` and other URLs go through fsspec.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import zarr

from bioloop.errors import DataError

_REL_TOL = 1e-6
_UNIT_TO_NM = {
    None: 1.0, "": 1.0, "nanometer": 1.0, "nm": 1.0, "angstrom": 0.1, "picometer": 1e-3,
    "micrometer": 1e3, "micron": 1e3, "um": 1e3, "millimeter": 1e6, "centimeter": 1e7, "meter": 1e9,
}
_NON_SPATIAL = ("c", "t")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@attrs.frozen
class Volume:
    """One resolution level of an image. ``scale``/``translation`` are per spatial axis, in nm."""

    array: Any
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    axes: tuple[str, ...]
    path: str
    spatial_dims: tuple[int, ...] = attrs.field()

    @spatial_dims.default
    def _all_dims(self) -> tuple[int, ...]:
        return tuple(range(len(self.axes)))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the whole array (non-spatial axes such as a channel axis included)."""
        return tuple(self.array.shape)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[d] for d in self.spatial_dims)

    @property
    def ndim(self) -> int:
        return len(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def roi(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(start_nm, stop_nm): start = translation, stop = translation + spatial_shape * scale."""
        stop = tuple(t + n * s for t, n, s in zip(self.translation, self.spatial_shape, self.scale))
        return tuple(self.translation), stop

    def world_to_voxel(self, point_nm: Sequence[float]) -> tuple[float, ...]:
        """Fractional voxel index of a world point (nm), spatial axes only."""
        return tuple((p - t) / s for p, t, s in zip(point_nm, self.translation, self.scale, strict=True))

    def voxel_to_world(self, index: Sequence[float]) -> tuple[float, ...]:
        """World position (nm) of the centre of a (possibly fractional) voxel index."""
        return tuple(t + i * s for i, t, s in zip(index, self.translation, self.scale, strict=True))

    def read(self, start_vox: Sequence[int], shape_vox: Sequence[int], fill: float = 0) -> np.ndarray:
        """Read a box of voxels; parts outside the array come back as ``fill`` (a non-integer fill gives float32).

        ``start_vox``/``shape_vox`` give either every axis or the spatial axes only (then
        non-spatial axes such as channels are read whole).
        """
        start, shape, out = self._filled_box(start_vox, shape_vox, fill)
        src, dst = [], []
        for b, n, size in zip(start, shape, self.shape):
            lo, hi = max(b, 0), min(b + n, size)
            if hi <= lo:
                return out
            src.append(slice(lo, hi))
            dst.append(slice(lo - b, hi - b))
        out[tuple(dst)] = self.array[tuple(src)]
        return out

    def read_world(self, start_nm: Sequence[float], shape_vox: Sequence[int], fill: float = 0) -> np.ndarray:
        """Read a box whose first voxel centre is nearest to ``start_nm`` (spatial axes, nm)."""
        start = [int(math.floor(v + 0.5)) for v in self.world_to_voxel(start_nm)]
        return self.read(start, shape_vox, fill)

    def _filled_box(self, start_vox, shape_vox, fill) -> tuple[list[int], list[int], np.ndarray]:
        """The full read box and an output array of its shape filled with ``fill`` (float32 when an
        integer image is read with a non-integer fill such as NaN)."""
        start, shape = self._full_box(start_vox, shape_vox)
        dtype = self.dtype
        if dtype.kind in "biu" and not float(fill).is_integer():
            dtype = np.dtype(np.float32)
        return start, shape, np.full(shape, fill, dtype=dtype)

    def _full_box(self, start_vox, shape_vox) -> tuple[list[int], list[int]]:
        start, shape = [int(v) for v in start_vox], [int(v) for v in shape_vox]
        if len(start) != len(shape):
            raise DataError.at(self.path, "read box start and shape differ in length", got=(start, shape))
        if len(start) == self.ndim:
            return start, shape
        if len(start) != len(self.spatial_dims):
            raise DataError.at(
                self.path, f"read box needs {len(self.spatial_dims)} spatial or {self.ndim} values",
                got=tuple(start), fix=f"give one value per axis of {self.axes}")
        full_start, full_shape = [0] * self.ndim, list(self.shape)
        for k, d in enumerate(self.spatial_dims):
            full_start[d], full_shape[d] = start[k], shape[k]
        return full_start, full_shape


# ----------------------------------------------------------------------------- reading


def open_volume(path: str | os.PathLike, scale: Sequence[float] | float | None = None, *,
                storage_options: dict | None = None) -> Volume:
    """Open an OME-NGFF multiscale group at the level whose voxel size is ``scale`` (nm), or a plain array.

    ``scale=None`` picks the first (finest) level of a group; for a plain array it means 1 nm per voxel.
    """
    path = str(path)
    node, group, group_path, only = _locate(path, storage_options)
    if group is not None:
        return _open_level(group, group_path, scale, only=only)
    names = getattr(node.metadata, "dimension_names", None)
    axes = tuple(names) if names and all(names) else _default_axes(node.ndim)
    spatial = tuple(i for i, a in enumerate(axes) if a not in _NON_SPATIAL) or tuple(range(node.ndim))
    vox = _as_scale(scale, len(spatial), path) if scale is not None else (1.0,) * len(spatial)
    return Volume(node, vox, (0.0,) * len(spatial), axes, path, spatial)


def open_levels(path: str | os.PathLike, *, storage_options: dict | None = None) -> list[Volume] | None:
    """Every level of an OME-NGFF image in listed order (only that level for a level's own path).

    Returns None for a plain zarr array, whose voxel size comes from the caller.
    """
    path = str(path)
    _, group, group_path, only = _locate(path, storage_options)
    if group is None:
        return None
    _, levels = _level_table(group, group_path, only)
    return [_level_volume(group, group_path, level) for level in levels]


def _locate(path: str, storage_options: dict | None):
    """(node, image group or None, its path, level name when ``path`` is one level's array)."""
    node = _open_node(path, storage_options)
    if isinstance(node, zarr.Group):
        return node, node, path, None
    parent_path, _, name = path.rstrip("/").rpartition("/")
    parent = _parent_group(parent_path, storage_options)
    if parent is not None and any(ds.get("path") == name for ms in _multiscales(dict(parent.attrs)) or []
                                  for ds in ms.get("datasets", [])):
        return node, parent, parent_path, name
    return node, None, path, None


def _open_node(path: str, storage_options: dict | None):
    fix = "check the path, or create the data first (for example with `bioloop.data.synthetic`)"
    if _URL.match(path) and not path.startswith("file://"):
        try:
            store = zarr.storage.FsspecStore.from_url(path, storage_options=storage_options, read_only=True)
            return zarr.open(store=store, mode="r")
        except ImportError as exc:
            raise DataError.at(path, f"cannot open remote path ({exc})", fix="install fsspec and s3fs") from exc
        except (FileNotFoundError, KeyError, zarr.errors.NodeTypeValidationError) as exc:
            raise DataError.at(path, "no zarr array or group here", fix=fix) from exc
        except Exception as exc:  # connection, credential and endpoint errors of the remote filesystem
            raise DataError.at(path, f"cannot read the remote path ({type(exc).__name__}: {exc})",
                               fix="check the URL and storage_options (credentials, endpoint_url, anon)") from exc
    local = path[len("file://"):] if path.startswith("file://") else path
    if not os.path.exists(local):
        raise DataError.at(path, "no such zarr array or group", fix=fix)
    try:
        return zarr.open(store=local, mode="r")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.NodeTypeValidationError) as exc:
        raise DataError.at(path, f"not a readable zarr array or group ({exc})", fix=fix) from exc


def _parent_group(parent_path: str, storage_options: dict | None):
    if not parent_path or parent_path.endswith(":/"):
        return None
    try:
        node = _open_node(parent_path, storage_options)
    except DataError:
        return None
    return node if isinstance(node, zarr.Group) else None


def _multiscales(attributes: dict) -> list | None:
    if isinstance(attributes.get("ome"), dict) and "multiscales" in attributes["ome"]:
        return attributes["ome"]["multiscales"]
    return attributes.get("multiscales")


def _open_level(group, path: str, scale, only: str | None = None) -> Volume:
    spatial, levels = _level_table(group, path, only)
    if scale is None:
        chosen = levels[0]
    else:
        want = _as_scale(scale, len(spatial), path)
        match = [lv for lv in levels if all(math.isclose(a, b, rel_tol=_REL_TOL) for a, b in zip(lv[1], want))]
        if not match:
            available = {lv[0]: lv[1] for lv in levels}
            raise DataError.at(path, f"no level with voxel size {want} nm", got=available,
                               fix="request one of the available scales or resample the data")
        chosen = match[0]
    return _level_volume(group, path, chosen)


def _level_table(group, path: str, only: str | None):
    """(spatial dims, [(name, scale_nm, translation_nm, axes, spatial dims)]) of the first multiscale image."""
    ms_list = _multiscales(dict(group.attrs))
    if not ms_list:
        raise DataError.at(path, "zarr group has no OME-NGFF 'multiscales' metadata",
                           fix="point to an OME-NGFF image group or directly to an array inside it")
    ms = ms_list[0]
    axes, spatial, units = _parse_axes(ms.get("axes"), path, group)
    outer_s, outer_t = _transform(ms.get("coordinateTransformations"), len(axes), path)
    levels = []
    for ds in ms.get("datasets", []):
        s, t = _transform(ds.get("coordinateTransformations"), len(axes), path)
        full_s = [a * b for a, b in zip(s, outer_s)]
        full_t = [a * os_ + ot for a, os_, ot in zip(t, outer_s, outer_t)]
        levels.append((ds["path"], tuple(full_s[d] * units[d] for d in spatial),
                       tuple(full_t[d] * units[d] for d in spatial), axes, spatial))
    if not levels:
        raise DataError.at(path, "OME-NGFF multiscales lists no datasets", fix="write at least one level")
    if only is not None:  # the caller opened one level's array directly
        levels = [lv for lv in levels if lv[0] == only]
    return spatial, levels


def _level_volume(group, path: str, level) -> Volume:
    name, vox, trans, axes, spatial = level
    try:
        array = group[name]
    except KeyError as exc:
        raise DataError.at(path, f"multiscales lists level '{name}' but it is missing",
                           fix="rewrite the image or fix its metadata") from exc
    return Volume(array, vox, trans, axes, f"{path.rstrip('/')}/{name}", spatial)


def _parse_axes(raw, path: str, group) -> tuple[tuple[str, ...], tuple[int, ...], list[float]]:
    if raw is None:
        first = next(iter(group.array_keys()), None)
        ndim = group[first].ndim if first is not None else 3
        names = _default_axes(ndim)
        raw = [{"name": n} for n in names]
    names, spatial, units = [], [], []
    for i, ax in enumerate(raw):
        if isinstance(ax, str):  # NGFF 0.3 style
            ax = {"name": ax}
        if "type" not in ax:
            ax = {**ax, "type": {"c": "channel", "t": "time"}.get(ax["name"], "space")}
        names.append(ax["name"])
        if ax.get("type") == "space":
            spatial.append(i)
        unit = ax.get("unit")
        if ax.get("type") == "space" and unit not in _UNIT_TO_NM:
            raise DataError.at(path, f"unknown unit for axis '{ax['name']}'", got=unit,
                               fix=f"use one of {sorted(k for k in _UNIT_TO_NM if k)}")
        units.append(_UNIT_TO_NM.get(unit, 1.0))
    if not spatial:
        raise DataError.at(path, "OME-NGFF axes contain no 'space' axis", got=names)
    return tuple(names), tuple(spatial), units


def _transform(items, n: int, path: str) -> tuple[list[float], list[float]]:
    scale, trans = [1.0] * n, [0.0] * n
    for item in items or []:
        kind = item.get("type")
        if kind == "identity":
            continue
        values = item.get(kind)
        if kind not in ("scale", "translation") or values is None or len(values) != n:
            raise DataError.at(path, "unsupported or malformed coordinateTransformation", got=item,
                               fix=f"use 'scale'/'translation' with {n} values each")
        if kind == "scale":
            scale = [a * float(b) for a, b in zip(scale, values)]
        else:
            trans = [a + float(b) for a, b in zip(trans, values)]
    return scale, trans


def _default_axes(ndim: int) -> tuple[str, ...]:
    return {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x"), 4: ("c", "z", "y", "x"), 5: ("t", "c", "z", "y", "x")}.get(
        ndim, tuple(f"d{i}" for i in range(ndim)))


def _as_scale(scale, n: int, path: str) -> tuple[float, ...]:
    values = (float(scale),) * n if isinstance(scale, (int, float)) else tuple(float(v) for v in scale)
    if len(values) != n or any(not v > 0 for v in values):
        raise DataError.at(path, f"voxel size needs {n} positive values (nm)", got=values,
                           fix="give one voxel size per spatial axis")
    return values


# ----------------------------------------------------------------------------- writing


def create_volume(path: str | os.PathLike, shape: Sequence[int], dtype, *, scale: Sequence[float],
                  translation: Sequence[float] | None = None, axes: Sequence[str] = ("z", "y", "x"),
                  chunks: Sequence[int] | None = None, fill_value=0, zarr_format: int = 3,
                  overwrite: bool = False, attributes: dict | None = None, level_name: str = "s0",
                  storage_options: dict | None = None, image_label: dict | None = None,
                  compressors="auto"):
    """Create an OME-NGFF group with one level and return that (empty) zarr array for writing.

    ``compressors`` is zarr ``create_array``'s argument ("auto": zarr's default zstd; None: uncompressed).

    ``image_label`` (e.g. ``{}`` or ``{"colors": [...]}``) marks the image as a label image: OME-NGFF
    ``image-label`` metadata, with the version of the group's format."""
    group, arrays = _create_group(path, [tuple(int(n) for n in shape)], dtype, scale, translation, axes,
                                  chunks, fill_value, zarr_format, overwrite, attributes, [level_name],
                                  storage_options, image_label, compressors)
    return arrays[0]


def write_labels_list(path: str | os.PathLike, names: Sequence[str], *, zarr_format: int = 3,
                      storage_options: dict | None = None) -> None:
    """Make the group at ``path`` an OME-NGFF labels group listing its label images ``names`` (relative)."""
    path = str(path)
    remote = {"storage_options": storage_options} if _URL.match(path) and storage_options else {}
    group = zarr.open_group(path, mode="a", zarr_format=zarr_format, **remote)
    if zarr_format == 2:
        group.attrs.update({"labels": list(names)})
    else:
        group.attrs.update({"ome": {"version": "0.5", "labels": list(names)}})


def write_volume(path: str | os.PathLike, data: np.ndarray, *, scale: Sequence[float],
                 translation: Sequence[float] | None = None, axes: Sequence[str] = ("z", "y", "x"),
                 chunks: Sequence[int] | None = None, fill_value=0, zarr_format: int = 3,
                 overwrite: bool = False, attributes: dict | None = None, levels: int = 1,
                 labels: bool = False, storage_options: dict | None = None) -> Volume:
    """Write ``data`` as an OME-NGFF image with ``levels`` 2x-downsampled levels s0, s1, ...

    Images are averaged over 2x2(x2) blocks; ``labels=True`` keeps every second voxel instead.
    Returns the finest level, opened for reading.
    """
    data = np.asarray(data)
    axes = tuple(axes)
    if len(axes) != data.ndim:
        raise DataError.at(str(path), "axes do not match the data dimensions", got=(axes, data.shape))
    spatial = [i for i, a in enumerate(axes) if a not in _NON_SPATIAL]
    pyramid = [data]
    for _ in range(int(levels) - 1):
        pyramid.append(_downsample(pyramid[-1], spatial, labels))
    _, arrays = _create_group(path, [a.shape for a in pyramid], data.dtype, scale, translation, axes, chunks,
                              fill_value, zarr_format, overwrite, attributes, [f"s{i}" for i in range(len(pyramid))],
                              storage_options)
    for arr, values in zip(arrays, pyramid):
        arr[...] = values
    return open_volume(path, storage_options=storage_options)


def pyramid_transforms(scale: Sequence[float], translation: Sequence[float], factors: Sequence[int]):
    """Scale and translation of a level downsampled by ``factors``, keeping voxel centres consistent."""
    new_scale = tuple(s * f for s, f in zip(scale, factors, strict=True))
    new_trans = tuple(t + (f - 1) * s / 2 for t, s, f in zip(translation, scale, factors, strict=True))
    return new_scale, new_trans


def _factors(shape: Sequence[int], spatial: Sequence[int]) -> list[int]:
    return [2 if shape[d] >= 2 else 1 for d in spatial]


def _downsample(data: np.ndarray, spatial: list[int], labels: bool) -> np.ndarray:
    factors = dict(zip(spatial, _factors(data.shape, spatial)))
    trimmed = data[tuple(slice(0, (n // factors.get(d, 1)) * factors.get(d, 1)) for d, n in enumerate(data.shape))]
    if labels:
        return np.ascontiguousarray(trimmed[tuple(slice(None, None, factors.get(d, 1)) for d in range(data.ndim))])
    new_shape, reduce_axes = [], []
    for d, n in enumerate(trimmed.shape):
        f = factors.get(d, 1)
        new_shape += [n // f, f]
        reduce_axes.append(2 * d + 1)
    mean = trimmed.reshape(new_shape).mean(axis=tuple(reduce_axes), dtype=np.float64)
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        mean = np.clip(np.rint(mean), info.min, info.max)
    return mean.astype(data.dtype)


def _create_group(path, shapes, dtype, scale, translation, axes, chunks, fill_value, zarr_format, overwrite,
                  attributes, names, storage_options=None, image_label=None, compressors="auto"):
    path, axes = str(path), tuple(axes)
    if zarr_format not in (2, 3):
        raise DataError.at(path, "zarr_format must be 2 or 3", got=zarr_format)
    spatial = [i for i, a in enumerate(axes) if a not in _NON_SPATIAL]
    if len(axes) != len(shapes[0]):
        raise DataError.at(path, f"axes {axes} do not match the shape", got=tuple(shapes[0]))
    scale = _as_scale(scale, len(spatial), path)
    translation = tuple(float(t) for t in translation) if translation is not None else (0.0,) * len(spatial)
    if len(translation) != len(spatial):
        raise DataError.at(path, f"translation needs {len(spatial)} values (nm)", got=translation)
    datasets, s, t = [], scale, translation
    for k, (name, shape) in enumerate(zip(names, shapes)):
        if k:
            s, t = pyramid_transforms(s, t, _factors(shapes[k - 1], spatial))
        datasets.append({"path": name, "coordinateTransformations": [
            {"type": "scale", "scale": _per_axis(s, 1.0, axes)},
            {"type": "translation", "translation": _per_axis(t, 0.0, axes)}]})
    ms = {"name": os.path.basename(path.rstrip("/")), "axes": [_axis_meta(a) for a in axes], "datasets": datasets}
    if zarr_format == 2:
        meta = {"multiscales": [{"version": "0.4", **ms}]}
        if image_label is not None:
            meta["image-label"] = {"version": "0.4", **image_label}
    else:
        meta = {"ome": {"version": "0.5", "multiscales": [ms]}}
        if image_label is not None:
            meta["ome"]["image-label"] = dict(image_label)
    _make_parents(path, zarr_format)
    try:
        remote = {"storage_options": storage_options} if _URL.match(path) and storage_options else {}
        group = zarr.open_group(path, mode="w" if overwrite else "w-", zarr_format=zarr_format, **remote)
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
        raise DataError.at(path, "already exists", fix="pass overwrite=True or choose another path") from exc
    group.attrs.update({**(attributes or {}), **meta})
    arrays = []
    for name, shape in zip(names, shapes):
        kwargs = {"dimension_names": axes} if zarr_format == 3 else {}
        arrays.append(group.create_array(name, shape=shape, dtype=dtype, fill_value=fill_value,
                                         chunks=_chunks(shape, axes, chunks), compressors=compressors,
                                         **kwargs))
    return group, arrays


def _per_axis(values, neutral: float, axes) -> list[float]:
    it = iter(values)
    return [neutral if a in _NON_SPATIAL else float(next(it)) for a in axes]


def _axis_meta(name: str) -> dict:
    if name in _NON_SPATIAL:
        return {"name": name, "type": "channel" if name == "c" else "time"}
    return {"name": name, "type": "space", "unit": "nanometer"}


def _chunks(shape, axes, chunks) -> tuple[int, ...]:
    if chunks is not None:
        return tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape))
    side = 64 if sum(a not in _NON_SPATIAL for a in axes) >= 3 else 256
    return tuple(1 if a == "t" else max(1, int(n)) if a == "c" else max(1, min(int(n), side))
                 for a, n in zip(axes, shape))


def _make_parents(path: str, zarr_format: int) -> None:
    """Create the missing groups between ``path`` and its zarr root (an existing group or a ``*.zarr`` folder)."""
    if _URL.match(path):
        return
    parts = os.path.abspath(path).split(os.sep)
    marker = "zarr.json" if zarr_format == 3 else ".zgroup"
    root = None
    for i in range(len(parts) - 1, 0, -1):
        candidate = os.sep.join(parts[:i]) or os.sep
        if os.path.exists(os.path.join(candidate, marker)):
            root = i
            break
    if root is None:  # start a new hierarchy at the first "*.zarr" folder above the image
        root = next((i for i in range(1, len(parts) - 1) if parts[i].endswith(".zarr")), None)
        if root is None:
            return
        zarr.open_group(os.sep.join(parts[: root + 1]), mode="a", zarr_format=zarr_format)
    for i in range(root + 1, len(parts)):
        sub = os.sep.join(parts[:i])
        if not os.path.exists(os.path.join(sub, marker)):
            zarr.open_group(sub, mode="a", zarr_format=zarr_format)
