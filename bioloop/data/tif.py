"""TIFF / OME-TIFF images as :class:`bioloop.data.ngff.Volume`, and Allen Cell Segmenter folders.

Axes come from tifffile's series axes: length-1 axes other than Y/X are dropped (``TZCYX`` with T=1
becomes ``CZYX``), samples (RGB) count as channels, an unnamed stack axis (``Q``/``I``) is z, and
the result is always ``(c,) z, y, x`` -- a 2D ``YX`` image becomes ``(1, Y, X)``.

Voxel size (nm, per spatial axis) comes from, in this order: OME-XML ``PhysicalSizeZ/Y/X`` (with
their units), ImageJ metadata (``spacing`` for z, X/YResolution for y/x, in the ImageJ ``unit``),
X/YResolution tags with a metric ResolutionUnit, and finally the caller's ``scale`` or 1 nm. An axis
the file does not describe takes the caller's value. Uncompressed local files are memory-mapped.
"""

from __future__ import annotations

import io
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioloop.data.ngff import Volume
from bioloop.errors import DataError

TIF_SUFFIXES = (".tif", ".tiff")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_UNIT_TO_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "å": 0.1, "angstrom": 0.1, "pm": 1e-3,
    "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "\\u00b5m": 1e3,
    "mm": 1e6, "millimeter": 1e6, "cm": 1e7, "centimeter": 1e7, "m": 1e9, "meter": 1e9,
}
_RESUNIT_TO_NM = {3: 1e7, 4: 1e6, 5: 1e3}  # CENTIMETER, MILLIMETER, MICROMETER (tifffile); INCH is often junk


def is_tif(path: str | os.PathLike) -> bool:
    """True for ``.tif``/``.tiff`` names (``.ome.tif`` included), any case."""
    return str(path).rstrip("/").lower().endswith(TIF_SUFFIXES)


def open_tif(path: str | os.PathLike, scale: Sequence[float] | float | None = None, *,
             storage_options: dict | None = None) -> Volume:
    """Open the first series of a TIFF as a Volume (axes ``(c,) z, y, x``; voxel size from the file)."""
    import tifffile

    path = str(path)
    remote = bool(_URL.match(path)) and not path.startswith("file://")
    local = path[len("file://"):] if path.startswith("file://") else path
    try:
        if remote:
            import fsspec

            with fsspec.open(path, "rb", **(storage_options or {})) as handle:
                source = io.BytesIO(handle.read())
        else:
            if not os.path.isfile(local):
                raise DataError.at(path, "no such tif file", fix="check the path")
            source = local
        with tifffile.TiffFile(source) as tif:
            series = tif.series[0]
            axes, shape = series.axes.upper(), tuple(series.shape)
            found = _file_voxel_size(tif)
            data = None if remote else _memmap(local)
            if data is None or tuple(data.shape) != shape:
                data = series.asarray()
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError.at(path, "no such tif file", fix="check the path and storage_options") from exc
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
        raise DataError.at(path, f"not a readable tif file ({exc})", fix="check that the file is a TIFF") from exc
    data, names = _canonical_axes(data, axes, path)
    spatial = tuple(i for i, a in enumerate(names) if a != "c")
    flat = data.shape[spatial[0]] == 1
    return Volume(data, _voxel_size(found, scale, path, flat), (0.0, 0.0, 0.0), names, path, spatial)


def find_allen_triplets(folder: str | os.PathLike) -> list[tuple[str, str, str | None]]:
    """Pair ``name.tif`` / ``name_GT.tif`` / optional ``name_CM.tif`` (any tif suffix) in ``folder``.

    Returns ``[(image, gt, cost_map_or_None)]`` sorted by name; images without a ``_GT`` file are
    skipped (they have nothing to train on).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError.at(str(folder), "no such folder", fix="point to the folder holding the Allen tif files")
    images: dict[str, list[Path]] = {}
    gts: dict[str, Path] = {}
    cms: dict[str, Path] = {}
    for file in sorted(root.iterdir()):
        if not file.is_file() or not is_tif(file.name):
            continue
        stem = _stem(file.name)
        for suffix, table in (("_GT", gts), ("_CM", cms)):
            if stem.endswith(suffix):
                base = stem[: -len(suffix)]
                if base in table:
                    raise DataError.at(str(file), f"two {suffix} files for '{base}'", got=[table[base].name, file.name],
                                       fix="keep one of them")
                table[base] = file
                break
        else:
            images.setdefault(stem, []).append(file)
    for base, cm in cms.items():
        if base not in gts:
            raise DataError.at(str(cm), "cost map has no matching _GT label file", got=cm.name,
                               fix=f"add {base}_GT.tif or remove the cost map")
    triplets = []
    for base, gt in sorted(gts.items()):
        found = images.get(base, [])
        if not found:
            raise DataError.at(str(gt), "label file has no matching image", got=gt.name,
                               fix=f"add the image as {base}.tif (or .ome.tif) next to it")
        if len(found) > 1:
            raise DataError.at(str(gt), "label file matches several images", got=[f.name for f in found],
                               fix="keep one image per name")
        cm = cms.get(base)
        triplets.append((str(found[0]), str(gt), str(cm) if cm else None))
    if not triplets:
        raise DataError.at(str(folder), "no *_GT.tif label files", fix="name each label file <image name>_GT.tif")
    return triplets


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _memmap(path: str):
    import tifffile

    try:
        return tifffile.memmap(path, mode="r")
    except (ValueError, OSError):  # compressed or non-contiguous: read into memory instead
        return None


def _canonical_axes(data: np.ndarray, axes: str, path: str) -> tuple[np.ndarray, tuple[str, ...]]:
    keep = [(a, n) for a, n in zip(axes, data.shape) if n > 1 or a in "YX"]
    data = data.reshape([n for _, n in keep])
    names = []
    for a, n in keep:
        if a in "QI" and "Z" not in axes:
            a = "Z"
        if a == "S":
            a = "C"
        if a == "T":
            raise DataError.at(path, f"tif holds a time series of {n} time points", got=axes,
                               fix="save one time point per file")
        if a not in "CZYX" or a.lower() in names:
            raise DataError.at(path, "unsupported tif axes", got=axes, fix="save the image as ZYX, CZYX or YX")
        names.append(a.lower())
    if "y" not in names or "x" not in names:
        raise DataError.at(path, "tif has no Y and X axes", got=axes, fix="save the image as ZYX, CZYX or YX")
    if "z" not in names:
        data, names = data[..., None, :, :], names[:-2] + ["z"] + names[-2:]
    order = [names.index(a) for a in ("c", "z", "y", "x") if a in names]
    return data.transpose(order), tuple(names[i] for i in order)


def _file_voxel_size(tif) -> list[float | None]:
    """[z, y, x] in nm as the file states them; None where it says nothing."""
    found: list[float | None] = [None, None, None]
    if tif.is_ome and tif.ome_metadata:
        found = _ome_voxel_size(tif.ome_metadata)
    if any(v is None for v in found):
        page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
        ij = tif.imagej_metadata or {}
        unit = _UNIT_TO_NM.get(str(ij.get("unit", "")).strip().lower())
        if unit is None:
            tag = page.tags.get("ResolutionUnit")
            unit_xy = _RESUNIT_TO_NM.get(int(tag.value)) if tag is not None else None
        else:
            unit_xy = unit
        if unit is not None and found[0] is None and ij.get("spacing"):
            found[0] = float(ij["spacing"]) * unit
        for k, name in ((1, "YResolution"), (2, "XResolution")):
            tag = page.tags.get(name)
            if found[k] is None and unit_xy is not None and tag is not None:
                num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
                if num and den:
                    found[k] = float(den) / float(num) * unit_xy
    return found


def _ome_voxel_size(xml: str) -> list[float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return [None, None, None]
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return [None, None, None]
    found: list[float | None] = []
    for axis in "ZYX":
        value, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")
        factor = _UNIT_TO_NM.get(unit.strip().lower())
        try:
            size = float(value) * factor if value is not None and factor is not None else None
        except ValueError:
            size = None
        found.append(size if size and math.isfinite(size) and size > 0 else None)
    return found


def _voxel_size(found: list[float | None], scale, path: str, flat: bool) -> tuple[float, float, float]:
    if scale is None:
        given: tuple[float | None, ...] = (None, None, None)
    else:
        values = (float(scale),) * 3 if isinstance(scale, (int, float)) else tuple(float(v) for v in scale)
        if len(values) == 2 and flat:  # a 2D image: (y, x) is enough
            values = (1.0, *values)
        if len(values) != 3 or any(not v > 0 for v in values):
            raise DataError.at(path, "voxel size needs 3 positive values (z, y, x in nm)", got=values,
                               fix="give one voxel size per spatial axis")
        given = values
    return tuple(f if f is not None else (g if g is not None else 1.0) for f, g in zip(found, given))
