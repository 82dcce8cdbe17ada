"""Generate the datasplit CSV by crawling a search path (replaces csc's ``make_datasplit_csv``).

CellMap layout: ``search_path`` is a template such as ``/data/{dataset}/{dataset}.zarr/recon-1/{name}``;
``{name}`` becomes ``raw_name`` (the raw image) or ``crop_name`` (``labels/groundtruth/{crop}/{label}``).
A crop's classes are the requested classes whose ``{label}`` exists. Crops are split into train and
validate BY DATASET (seeded), so one sample never lands in both. Allen layout: ``search_path`` is a
folder of ``name.tif`` + ``name_GT.tif`` (+ optional ``name_CM.tif``) files, split by file.
"""

from __future__ import annotations

import fnmatch
import glob
import math
import os
import random
import re
from collections.abc import Sequence
from string import Formatter

import attrs

from bioloop.data.datasplit import USAGES, CropEntry, write_datasplit
from bioloop.data.ngff import open_volume
from bioloop.errors import ConfigError, DataError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PLACEHOLDERS = ("dataset", "crop", "label")
_TIF_EXTS = (".ome.tiff", ".ome.tif", ".tiff", ".tif")
_REL_TOL = 1e-6
_METADATA = ("zarr.json", ".zattrs", ".zgroup", ".zarray", "attributes.json")


def _comma_list(text) -> list[str]:
    """'nuc, mito' -> ['nuc', 'mito'] (a list passes through)."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    return [str(s).strip() for s in items if str(s).strip()]


def parse_force_all_classes(text) -> bool | str:
    """'true'/'false'/'train'/'validate' (any case) -> True/False/'train'/'validate'; ValueError otherwise."""
    if isinstance(text, bool) or text in USAGES:
        return text
    value = str(text).strip().lower()
    table = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if value in table:
        return table[value]
    if value in USAGES:
        return value
    raise ValueError(f"expected true, false, train or validate (got {text!r})")


def parse_scale(text) -> float | tuple[float, ...] | None:
    """'8' -> 8.0, '8,4,4' -> (8.0, 4.0, 4.0), 'none'/'' -> None; ValueError otherwise."""
    if text is None or isinstance(text, (int, float, tuple, list)):
        return text
    parts = _comma_list(text)
    if not parts or parts == ["none"]:
        return None
    values = tuple(float(p) for p in parts)
    return values[0] if len(values) == 1 else values


#: name -> (converter from a command-line string, CLI default, help). ``None`` default = required option.
DATASPLIT_OPTIONS: dict[str, tuple] = {
    "search_path": (str, None, "template with {dataset} and {name}, e.g. 'data/{dataset}/{dataset}.zarr/recon-1/"
                               "{name}'; with --layout allen a folder of name.tif + name_GT.tif files"),
    "classes": (_comma_list, None, "comma-separated classes, e.g. nuc,mito"),
    "raw_name": (str, "em/fibsem-uint8", "raw image inside a dataset (fills {name})"),
    "crop_name": (str, "labels/groundtruth/{crop}/{label}", "label arrays inside a dataset (fills {name})"),
    "validation_prob": (float, 0.3, "share of datasets put in validation (0 <= p < 1)"),
    "random_seed": (int, 42, "seed of the train/validate draw"),
    "force_all_classes": (parse_force_all_classes, False,
                          "true: only crops annotating every class; train/validate: only that usage needs them"),
    "filter_by_scale": (parse_scale, None, "keep crops with a level at this voxel size (nm) or finer: 8 or 8,4,4"),
    "datasets": (_comma_list, ["*"], "comma-separated dataset names or glob patterns to include"),
    "crops": (_comma_list, ["*"], "comma-separated crop names or glob patterns to include"),
    "csv_path": (str, "datasplit.csv", "where to write the CSV (the library default None writes nothing)"),
    "dry_run": (bool, False, "print the split without writing the CSV"),
    "layout": (str, "cellmap", "'cellmap' (zarr crops) or 'allen' (tif + _GT tif pairs)"),
}


class Datasplit(list):
    """The generated entries (a plain list of CropEntry) with ``notes``: skipped crops and warnings."""

    def __init__(self, entries=(), notes: Sequence[str] = ()):
        super().__init__(entries)
        self.notes = list(notes)


@attrs.define
class _Crop:
    group: str
    raw_path: str
    gt_path: str
    classes: tuple[str, ...]
    complete: bool = False


def make_datasplit(*, search_path: str, classes: Sequence[str], raw_name: str = "em/fibsem-uint8",
                   crop_name: str = "labels/groundtruth/{crop}/{label}", validation_prob: float = 0.3,
                   random_seed: int = 42, force_all_classes: bool | str = False,
                   filter_by_scale: float | Sequence[float] | None = None, datasets: Sequence[str] = ("*",),
                   crops: Sequence[str] = ("*",), csv_path: str | os.PathLike | None = None, dry_run: bool = False,
                   storage_options: dict | None = None, layout: str = "cellmap") -> Datasplit:
    """Crawl ``search_path``, split the crops into train/validate and write ``csv_path`` (unless dry_run or None)."""
    classes = _comma_list(classes) if isinstance(classes, str) else [str(c) for c in classes]
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    crops = [crops] if isinstance(crops, str) else list(crops)
    force = _check_options(search_path, classes, validation_prob, force_all_classes, layout, crop_name,
                           datasets or ["*"], crops or ["*"])
    scale = _check_scale(filter_by_scale)
    notes: list[str] = []
    if layout == "allen":
        if scale is not None:
            raise ConfigError.at("filter_by_scale", "needs OME-NGFF metadata, which Allen tif files do not have",
                                 got=filter_by_scale, fix="leave filter_by_scale unset with layout='allen'")
        found = _crawl_allen(search_path, classes, datasets or ["*"], crops or ["*"], storage_options, notes)
        units = [[c] for c in found]
    else:
        found = _crawl_cellmap(search_path, classes, raw_name, crop_name, datasets or ["*"], crops or ["*"],
                               force, scale, storage_options, notes)
        units = _group(found, notes)
    entries = _split(units, classes, validation_prob, random.Random(random_seed), force, notes, search_path)
    result = Datasplit(entries, notes)
    if csv_path is not None and not dry_run:
        write_datasplit(csv_path, result)
    return result


def summarize(entries: Sequence[CropEntry]) -> str:
    """Counts per usage and per class (plus the notes of a Datasplit), for printing."""
    per_usage = {u: [e for e in entries if e.usage == u] for u in USAGES}
    images = {u: len({e.raw_path for e in es}) for u, es in per_usage.items()}
    lines = [f"{len(entries)} crops: " + ", ".join(f"{u} {len(es)} (from {images[u]} raw images)"
                                                  for u, es in per_usage.items())]
    classes = list(dict.fromkeys(c for e in entries for c in e.classes))
    if classes:
        width = max(len(c) for c in classes + ["class"])
        lines.append(f"  {'class':<{width}}  " + "  ".join(f"{u:>8}" for u in USAGES))
        for cls in classes:
            counts = [sum(cls in e.classes for e in per_usage[u]) for u in USAGES]
            lines.append(f"  {cls:<{width}}  " + "  ".join(f"{n:>8}" for n in counts))
    lines += [f"note: {n}" for n in getattr(entries, "notes", [])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- options


def _check_options(search_path, classes, prob, force, layout, crop_name, datasets, crops) -> bool | str:
    if not isinstance(search_path, str) or not search_path.strip():
        raise ConfigError.at("search_path", "is empty", got=search_path,
                             fix="give a template like 'data/{dataset}/{dataset}.zarr/recon-1/{name}'")
    if not classes:
        raise ConfigError.at("classes", "no classes given", got=classes, fix="list at least one class, e.g. nuc,mito")
    if layout not in ("cellmap", "allen"):
        raise ConfigError.at("layout", "unknown layout", got=layout, fix="use 'cellmap' or 'allen'")
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob < 1:
        raise ConfigError.at("validation_prob", "must be at least 0 and below 1", got=prob,
                             fix="use e.g. 0.3; 1 would leave no training data, 0 keeps every crop for training")
    try:
        force = parse_force_all_classes(force)
    except ValueError:
        raise ConfigError.at("force_all_classes", "unknown value", got=force,
                             fix="use True, False, 'train' or 'validate'") from None
    if layout == "cellmap":
        names = {f for _, f, _, _ in Formatter().parse(search_path) if f is not None}
        if "name" not in names or names - {"dataset", "name"}:
            raise ConfigError.at("search_path", "needs the {name} placeholder and allows only {dataset} besides it",
                                 got=search_path, fix="use e.g. 'data/{dataset}/{dataset}.zarr/recon-1/{name}'")
        if not crop_name.endswith("/{label}") or "{crop}" not in crop_name:
            raise ConfigError.at("crop_name", "must contain {crop} and end with '/{label}'", got=crop_name,
                                 fix="use e.g. 'labels/groundtruth/{crop}/{label}'")
    for key, pats in (("datasets", datasets), ("crops", crops)):
        if any("/" in p for p in pats):
            raise ConfigError.at(key, "patterns match one path component and cannot contain '/'", got=pats)
    return force


def _check_scale(value) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        values = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ConfigError.at("filter_by_scale", "needs one positive voxel size in nm or one per axis", got=value,
                             fix="use e.g. 8 or (8, 4, 4)")
    return values


# ----------------------------------------------------------------------------- crawling


class _Finder:
    """Glob local paths with ``glob`` and URLs with fsspec; paths come back as the user would write them."""

    def __init__(self, template: str, storage_options: dict | None):
        self.fs = None
        if _URL.match(template):
            import fsspec.core
            self.fs, self.template = fsspec.core.url_to_fs(template, **(storage_options or {}))
        else:
            self.template = os.path.abspath(os.path.expanduser(template))

    def glob(self, pattern: str) -> list[str]:
        if self.fs is None:
            return sorted(glob.glob(pattern))
        return sorted(self.fs.glob(pattern))

    def full(self, path: str) -> str:
        return path if self.fs is None else self.fs.unstrip_protocol(path)


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _regex(template: str, **fixed: str) -> re.Pattern:
    """Regex of a template: ``fixed`` placeholders are literal, the others one path component each
    (a repeated placeholder must repeat its value); '*' and '?' in the rest stay wildcards."""
    out, seen = [], set()
    for part in re.split(r"(\{(?:%s)\})" % "|".join(_PLACEHOLDERS), template):
        key = part[1:-1]
        if key in fixed:
            out.append(re.escape(fixed[key]))
        elif key in _PLACEHOLDERS:
            out.append(f"(?P={key})" if key in seen else f"(?P<{key}>[^/]+)")
            seen.add(key)
        else:
            out.append("".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in part))
    return re.compile("".join(out) + "$")


def _crawl_cellmap(search_path, classes, raw_name, crop_name, datasets, crops, force, scale, storage_options,
                   notes) -> list[_Crop]:
    finder = _Finder(search_path, storage_options)
    raw_tpl = _fill(finder.template, name=raw_name)
    crop_tpl = _fill(finder.template, name=crop_name[: -len("/{label}")])
    label_tpl = crop_tpl + "/{label}"
    steps: list[str] = []

    found_ds: dict[str, str] = {}
    raw_re = _regex(raw_tpl)
    if "{dataset}" not in raw_tpl:
        datasets = ["*"]
    for pat in datasets:
        for path in finder.glob(_fill(raw_tpl, dataset=pat)):
            m = raw_re.match(path)
            name = m.groupdict().get("dataset", "") if m else None
            if name is not None and fnmatch.fnmatchcase(name, pat):
                found_ds.setdefault(name, path)
    searched = [_fill(raw_tpl, dataset=p) for p in datasets]
    steps.append(f"{len(found_ds)} datasets with raw data at {_short(searched)}")
    if not found_ds:
        _empty(search_path, steps, "check search_path, raw_name and the datasets patterns")

    labels_by_crop: dict[tuple[str, str], set[str]] = {}
    all_labels: set[str] = set()
    for ds, raw in sorted(found_ds.items()):
        tpl = _fill(label_tpl, dataset=glob.escape(ds))
        rx = _regex(label_tpl, dataset=ds)
        for pat in crops:
            for path in finder.glob(_fill(tpl, crop=pat, label="*")):
                m = rx.match(path)
                if m and fnmatch.fnmatchcase(m["crop"], pat):
                    labels_by_crop.setdefault((ds, m["crop"]), set()).add(m["label"])
                    if m["label"] not in _METADATA:
                        all_labels.add(m["label"])
    steps.append(f"{len(labels_by_crop)} crops at {_short([_fill(label_tpl, crop=p, label='*') for p in crops])}")
    if not labels_by_crop:
        _empty(search_path, steps, "check crop_name and the crops patterns")

    kept: list[_Crop] = []
    for (ds, crop), labels in sorted(labels_by_crop.items()):
        have = tuple(c for c in classes if c in labels)
        gt = finder.full(_fill(crop_tpl, dataset=ds, crop=crop))
        if have:
            kept.append(_Crop(ds, finder.full(found_ds[ds]), gt, have, len(have) == len(classes)))
    skipped = len(labels_by_crop) - len(kept)
    if skipped:
        notes.append(f"skipped {skipped} crops that annotate none of {classes}")
    steps.append(f"{len(kept)} annotate at least one of {classes}")
    if not kept:
        _empty(search_path, steps, f"check classes; labels found: {sorted(all_labels)[:20]}")

    if scale is not None:
        kept, finest = _filter_scale(kept, scale, storage_options, notes)
        steps.append(f"{len(kept)} have labels at {_fmt_scale(scale)} nm or finer")
        if not kept:
            _empty(search_path, steps, f"raise filter_by_scale; finest voxel sizes found: {sorted(finest)[:10]}")
    if force is True:
        before = len(kept)
        kept = [c for c in kept if c.complete]
        if before - len(kept):
            notes.append(f"dropped {before - len(kept)} crops that lack some of {classes} (force_all_classes=True)")
        steps.append(f"{len(kept)} annotate all of {classes} (force_all_classes=True)")
        if not kept:
            _empty(search_path, steps, "set force_all_classes=False or ask for fewer classes")
    return kept


def _filter_scale(crops: list[_Crop], scale, storage_options, notes):
    """Keep, per crop, the classes whose finest OME-NGFF level is at most ``scale`` nm on every axis."""
    kept, finest_seen, dropped = [], set(), 0
    for crop in crops:
        have = []
        for cls in crop.classes:
            path = f"{crop.gt_path}/{cls}"
            try:
                vol = open_volume(path, storage_options=storage_options)
            except DataError:
                continue
            if vol.path.rstrip("/") == path.rstrip("/"):  # a bare array: no multiscales voxel size to trust
                continue
            want = scale * len(vol.scale) if len(scale) == 1 else scale
            if len(want) != len(vol.scale):
                raise DataError.at(path, f"filter_by_scale has {len(scale)} values but the label has "
                                   f"{len(vol.scale)} spatial axes", got=scale, fix="give one value or one per axis")
            finest_seen.add(tuple(vol.scale))
            if all(s <= w * (1 + _REL_TOL) for s, w in zip(vol.scale, want)):
                have.append(cls)
        dropped += len(crop.classes) - len(have)
        if have:
            complete = crop.complete and len(have) == len(crop.classes)
            kept.append(attrs.evolve(crop, classes=tuple(have), complete=complete))
    if dropped:
        notes.append(f"filter_by_scale={_fmt_scale(scale)}: ignored {dropped} labels without a level that fine "
                     f"({len(crops) - len(kept)} crops dropped)")
    return kept, finest_seen


def _crawl_allen(folder, classes, datasets, crops, storage_options, notes) -> list[_Crop]:
    finder = _Finder(folder.rstrip("/") + "/{name}", storage_options)
    pattern = _fill(finder.template, name="*.tif*")
    files = {}
    for path in finder.glob(pattern):
        base = path.rsplit("/", 1)[-1]
        ext = next((e for e in _TIF_EXTS if base.lower().endswith(e)), None)
        if ext:
            files[base[: -len(ext)]] = path
    raws = [s for s in files if not s.endswith(("_GT", "_CM"))
            and any(fnmatch.fnmatchcase(s, p) for p in datasets) and any(fnmatch.fnmatchcase(s, p) for p in crops)]
    found = [_Crop(s, finder.full(files[s]), finder.full(files[s + "_GT"]), tuple(classes), True)
             for s in sorted(raws) if s + "_GT" in files]
    missing = len(raws) - len(found)
    if missing:
        notes.append(f"skipped {missing} images without a matching _GT label image")
    cost = sum(c.group + "_CM" in files for c in found)
    if cost:
        notes.append(f"{cost} of {len(found)} images have a _CM cost map")
    if not found:
        _empty(folder, [f"{len(files)} tif files at {pattern}", f"{len(raws)} images matching the patterns",
                        f"{len(found)} with a name_GT.tif label image"],
               "put name.tif and name_GT.tif pairs in the folder (or check the datasets/crops patterns)")
    return found


def _group(found: list[_Crop], notes) -> list[list[_Crop]]:
    """One unit per dataset; a single dataset falls back to one unit per crop (with a warning)."""
    groups: dict[str, list[_Crop]] = {}
    for crop in found:
        groups.setdefault(crop.group, []).append(crop)
    if len(groups) >= 2:
        return [groups[k] for k in sorted(groups)]
    if len(found) >= 2:
        notes.append(f"only one dataset ({next(iter(groups)) or found[0].raw_path}): its {len(found)} crops were "
                     "split individually; crops of one dataset are correlated, so validation scores may be optimistic")
    return [[c] for c in found]


# ----------------------------------------------------------------------------- splitting


def _split(units: list[list[_Crop]], classes, prob, rng, force, notes, where) -> list[CropEntry]:
    """Seeded usage per unit; >= 1 validate and >= 1 train unit when prob > 0 and there are >= 2 units."""
    strict = force if isinstance(force, str) else None
    other = {"train": "validate", "validate": "train"}
    forced = [other[strict] if strict and not any(c.complete for c in u) else None for u in units]
    usage = [f or ("validate" if rng.random() < prob else "train") for f in forced]
    if prob > 0 and len(units) >= 2:
        for missing in USAGES:
            if missing not in usage:
                free = [i for i, f in enumerate(forced) if f is None]
                if free:
                    usage[rng.choice(free)] = missing
    entries, dropped = [], 0
    for unit, use in zip(units, usage):
        for crop in unit:
            if use == strict and not crop.complete:
                dropped += 1
                continue
            entries.append(CropEntry(use, crop.raw_path, crop.gt_path, crop.classes))
    if dropped:
        notes.append(f"dropped {dropped} {strict} crops that lack some of {classes} "
                     f"(force_all_classes={strict!r}; moving them would put a dataset in both usages)")
    if not any(e.usage == "train" for e in entries):
        counts = {u: sum(e.usage == u for e in entries) for u in USAGES}
        raise DataError.at(where, "no crops left for training", got=counts,
                           fix="lower force_all_classes or validation_prob, or add annotated crops")
    if prob > 0 and not any(e.usage == "validate" for e in entries):
        notes.append("no validation crops: too few datasets/crops to hold one out")
    return entries


def _empty(where: str, steps: list[str], fix: str):
    raise DataError.at(where, "found no usable crops: " + "; ".join(steps), fix=fix)


def _short(paths: list[str]) -> str:
    return ", ".join(repr(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _fmt_scale(scale) -> str:
    return ",".join(f"{s:g}" for s in scale)
