"""Cell Tracking Challenge folders: list the sequences of a dataset root, and repair invalid ones.

``ctc_sequences(path, gt)``: every ``(name, label folder)`` under a CTC dataset root (``01_GT/TRA``,
``02_GT/TRA`` ... for ground truth, ``01_RES`` ... for results), or the one folder given.
``fix_ctc(src, dst)`` (``bioloop ctc-fix IN OUT``): relabel a folder so that every label is one
uninterrupted run of frames, as the CTC tools require. A label that disappears and comes back
keeps its label for its first run; each later run gets a new label whose parent is the previous
run. Children keep their parent's last run that ends before they begin. The track table is
rebuilt from the masks; the masks get the CTC file names; everything it changes is reported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from bioloop.errors import DataError
from bioloop.tasks.tracking.io_ctc import mask_files, read_ctc_tracks

__all__ = ["ctc_sequences", "fix_ctc"]

_TABLES = ("man_track.txt", "res_track.txt")


def _is_label_folder(p: Path) -> bool:
    return any((p / n).is_file() for n in _TABLES)


def ctc_sequences(path, *, gt: bool) -> list[tuple[str, str]]:
    """[(sequence name, label folder)] of a label folder, a ``NN_GT`` folder or a dataset root."""
    p = Path(os.fspath(path))
    if _is_label_folder(p):
        name = p.parent.name[:-3] if p.name == "TRA" and p.parent.name.endswith("_GT") else p.name
        return [(name[:-4] if name.endswith("_RES") else name, str(p))]
    if p.name.endswith("_GT") and (p / "TRA").is_dir():
        return [(p.name[:-3], str(p / "TRA"))]
    if not p.is_dir():
        return []
    found = []
    for child in sorted(p.iterdir()):
        m = re.fullmatch(r"(\d+)_GT" if gt else r"(\d+)_RES", child.name)
        if m and child.is_dir():
            folder = child / "TRA" if gt else child
            if _is_label_folder(folder):
                found.append((m.group(1), str(folder)))
    return found


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    """Uninterrupted runs [(first, last)] of a sorted frame list."""
    runs, start = [], frames[0]
    for a, b in zip(frames, frames[1:]):
        if b != a + 1:
            runs.append((start, a))
            start = b
    runs.append((start, frames[-1]))
    return runs


def fix_ctc(src, dst, *, pattern: str | None = None, say=print) -> dict:
    """Write a valid copy of the CTC label folder ``src`` to ``dst``; returns what changed.

    Masks are written under the CTC names (``man_trackTTT.tif`` / ``maskTTT.tif``), so ``pattern``
    (other input names, see ``io_ctc.mask_files``) also converts a folder to those names.
    Keys of the result: ``split`` {old label: new labels}, ``unlisted`` (mask labels missing from
    the table, added without parent), ``absent`` (table labels with no pixels, left out),
    ``parents_dropped`` {label: parent} (no run of the parent ends before the child begins)."""
    import tifffile

    src, dst = Path(os.fspath(src)), Path(os.fspath(dst))
    table_name = next((n for n in _TABLES if (src / n).is_file()), None)
    if table_name is None:
        raise DataError.at(str(src), "no man_track.txt or res_track.txt in this folder",
                           fix="point at a CTC '<seq>_GT/TRA' or '<seq>_RES' folder")
    if dst.resolve() == src.resolve():
        raise DataError.at(str(dst), "is the input folder", fix="write the fixed copy to another folder")
    if dst.exists() and any(dst.iterdir()):
        raise DataError.at(str(dst), "already exists and is not empty", fix="choose a new output folder")
    table = read_ctc_tracks(src / table_name)
    prefix = "man_track" if table_name == "man_track.txt" else "mask"
    files = mask_files(str(src), prefix, pattern)
    digits = max(3, len(str(max(files))))
    from tqdm.auto import tqdm

    from bioloop.engine.progress import progress_enabled

    present: dict[int, list[int]] = {}
    for t in tqdm(sorted(files), desc="reading masks", unit="frame", disable=not progress_enabled(False)):
        for lab in np.unique(tifffile.imread(files[t])).tolist():
            if lab > 0:
                present.setdefault(int(lab), []).append(t)
    listed = {int(r[0]): int(r[3]) for r in table}
    next_label = max([*present, *listed, 0]) + 1
    rows: dict[int, list[int]] = {}
    relabel: dict[int, list[tuple[int, int, int]]] = {}  # old label -> [(first, last, new label)]
    report: dict = {"split": {}, "unlisted": sorted(set(present) - set(listed)),
                    "absent": sorted(set(listed) - set(present)), "parents_dropped": {}}
    for lab in sorted(present):
        runs = _runs(sorted(present[lab]))
        labels = [lab] + list(range(next_label, next_label + len(runs) - 1))
        next_label += len(runs) - 1
        relabel[lab] = [(a, b, new) for (a, b), new in zip(runs, labels)]
        for k, ((a, b), new) in enumerate(zip(runs, labels)):
            rows[new] = [new, a, b, labels[k - 1] if k else 0]
        if len(runs) > 1:
            report["split"][lab] = labels[1:]
    for lab, parent in listed.items():
        if lab not in relabel or parent == 0:
            continue
        first = rows[relabel[lab][0][2]]
        before = [new for a, b, new in relabel.get(parent, []) if b < first[1]]
        if before:
            first[3] = before[-1]
        else:
            report["parents_dropped"][lab] = parent
    dst.mkdir(parents=True, exist_ok=True)
    for t in tqdm(sorted(files), desc="writing masks", unit="frame", disable=not progress_enabled(False)):
        mask = np.asarray(tifffile.imread(files[t]))
        ids, inv = np.unique(mask, return_inverse=True)
        dtype = mask.dtype if next_label <= np.iinfo(mask.dtype).max else np.uint32
        lut = np.array([next((new for a, b, new in relabel.get(int(i), []) if a <= t <= b), i) for i in ids],
                       dtype=dtype)
        tifffile.imwrite(dst / f"{prefix}{t:0{digits}d}.tif", lut[inv.reshape(mask.shape)], compression="zlib")
    with open(dst / table_name, "w") as f:
        f.writelines(f"{l} {b} {e} {p}\n" for l, b, e, p in sorted(rows.values()))
    for lab, new in report["split"].items():
        say(f"label {lab} comes back after a gap {len(new)} time(s): new labels {new}, "
            "each the child of the one before")
    if report["unlisted"]:
        say(f"mask labels not in {table_name} added without parent: {report['unlisted']}")
    if report["absent"]:
        say(f"labels listed in {table_name} with no pixels left out: {report['absent']}")
    for lab, parent in report["parents_dropped"].items():
        say(f"label {lab}: parent {parent} does not end before it begins; written without parent")
    return report
