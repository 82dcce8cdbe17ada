"""Read and write the CellMap (csc) datasplit CSV.

Each row has five quoted fields and no header::

    "train","/data/jrc_cell.zarr","recon-1/em/fibsem-uint8","/data/jrc_cell.zarr","recon-1/labels/groundtruth/crop1/[nuc,mito]"

usage, raw root, raw dataset, ground-truth root, crop group with the class list in brackets.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from pathlib import Path

import attrs

from bioloop.data.atomic import atomic_write_text
from bioloop.errors import DataError

USAGES = ("train", "validate")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_CLASSES = re.compile(r"^(?P<group>.*?)/?\[(?P<classes>[^\[\]]*)\]\s*$")
_CONTAINER = (".zarr", ".n5")


@attrs.frozen
class CropEntry:
    """One annotated crop: its usage, the raw image path, the crop group path and the classes to train."""

    usage: str
    raw_path: str
    gt_path: str
    classes: tuple[str, ...] = attrs.field(converter=tuple)


def read_datasplit(csv_path: str | os.PathLike) -> list[CropEntry]:
    """Parse a datasplit CSV; relative roots resolve against the CSV's folder."""
    path = Path(csv_path)
    if not path.is_file():
        raise DataError.at(str(path), "datasplit file not found",
                           fix="set datasplit_path to an existing file (`bioloop synthetic DEST` writes an example next to its data)")
    folder = path.absolute().parent
    entries = []
    with open(path, newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            entries.append(_parse_row(row, f"{path}:{line_no}", folder))
    if not entries:
        raise DataError.at(str(path), "datasplit file has no rows",
                           fix="add rows like "
                               '"train","/data/x.zarr","recon-1/em/fibsem-uint8","/data/x.zarr",'
                               '"recon-1/labels/groundtruth/crop1/[nuc,mito]"')
    return entries


def write_datasplit(csv_path: str | os.PathLike, entries: Iterable[CropEntry]) -> None:
    """Write entries in the csc format (every field quoted), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for entry in entries:
        if entry.usage not in USAGES:
            raise DataError.at(str(csv_path), f"unknown usage for {entry.gt_path}", got=entry.usage,
                               fix=f"use one of {USAGES}")
        raw_root, raw_ds = _split_container(entry.raw_path)
        gt_root, gt_ds = _split_container(entry.gt_path)
        gt_field = f"{gt_ds}/[{','.join(entry.classes)}]" if gt_ds else f"[{','.join(entry.classes)}]"
        writer.writerow([entry.usage, raw_root, raw_ds, gt_root, gt_field])
    target = Path(csv_path)
    atomic_write_text(target, buffer.getvalue(), newline="")


def _parse_row(row: list[str], where: str, folder: Path) -> CropEntry:
    if len(row) != 5:
        raise DataError.at(where, "a datasplit row needs 5 columns (usage, raw root, raw dataset, gt root, "
                           "gt dataset with [classes])", got=len(row),
                           fix="quote fields that contain commas, e.g. \"crop1/[nuc,mito]\"")
    usage, raw_root, raw_ds, gt_root, gt_field = (cell.strip() for cell in row)
    if usage not in USAGES:
        raise DataError.at(where, "unknown usage", got=usage, fix=f"use one of {USAGES}")
    match = _CLASSES.match(gt_field)
    if match is None:
        raise DataError.at(where, "the ground-truth column has no [class,...] list", got=gt_field,
                           fix="end it with the classes in brackets, e.g. recon-1/labels/groundtruth/crop1/[nuc,mito]")
    classes = tuple(c.strip() for c in match["classes"].split(",") if c.strip())
    if not classes:
        raise DataError.at(where, "the ground-truth class list is empty", got=gt_field,
                           fix="list at least one class, e.g. [nuc]")
    return CropEntry(usage, _join(_resolve(raw_root, folder), raw_ds), _join(_resolve(gt_root, folder),
                                                                              match["group"]), classes)


def _resolve(root: str, folder: Path) -> str:
    if _URL.match(root) or os.path.isabs(root):
        return root
    return str(folder / root)


def _join(root: str, dataset: str) -> str:
    dataset = dataset.strip("/")
    return f"{root.rstrip('/')}/{dataset}" if dataset else root


def _split_container(path: str) -> tuple[str, str]:
    """Split at the last ``*.zarr``/``*.n5`` component: (container, path inside it)."""
    parts = path.rstrip("/").split("/")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].endswith(_CONTAINER):
            return "/".join(parts[: i + 1]), "/".join(parts[i + 1:])
    head, _, tail = path.rstrip("/").rpartition("/")
    return head, tail
