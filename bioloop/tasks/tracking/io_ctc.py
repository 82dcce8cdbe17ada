"""Cell Tracking Challenge (CTC) sequences: read ground truth or results, write results, check them.

Layout of a CTC dataset root (2D frames ``(H, W)`` or 3D ``(Z, H, W)`` tifs)::

    01/t000.tif ...                                  raw frames
    01_GT/TRA/man_track000.tif ... + man_track.txt   ground-truth tracking markers (gt=True)
    01_RES/mask000.tif ... + res_track.txt           results (gt=False)

``*_track.txt`` has one line ``L B E P`` per track: label, first frame, last frame, parent label (0 = none).
CTC rules: a label is present in every frame B..E and no other; a parent ends before its children begin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.io_frames import ImageFrames, MissingFrames, numbered_files
from bioloop.tasks.tracking.types import Instances, TrackSequence

__all__ = ["check_ctc", "instances_from_labels", "mask_files", "read_ctc", "read_ctc_tracks", "write_ctc"]

_SEQ = re.compile(r"^\d+$")


def mask_files(folder: str, prefix: str, pattern: str | None = None, *, required: bool = True) -> dict[int, str]:
    """{frame: path} of a label folder's masks: ``<prefix>TTT.tif`` (CTC: ``man_trackTTT.tif`` in GT
    folders, ``maskTTT.tif`` in results), or ``pattern``, a file name with one ``*`` standing for the
    frame number (``frame_*.tif`` reads frame_0000.tif as frame 0)."""
    if pattern is None:
        files = numbered_files(folder, (".tif", ".tiff"), prefix)
        if files or not required:
            return files
        others = sorted(n for n in os.listdir(folder) if n.lower().endswith((".tif", ".tiff")))
        raise DataError.at(folder, f"no mask files named {prefix}TTT.tif (the Cell Tracking Challenge names)",
                           got=others[:5] or sorted(os.listdir(folder))[:5],
                           fix=f"name them {prefix}TTT.tif (`bioloop ctc-fix IN OUT --mask-pattern 'frame_*.tif'` "
                               "writes such a copy), or pass --mask-pattern 'frame_*.tif' to bioloop evaluate "
                               "('*' stands for the frame number)")
    if pattern.count("*") != 1:
        raise ConfigError.at("mask_pattern", "needs exactly one '*' where the frame number is", got=pattern,
                             fix="e.g. 'frame_*.tif'")
    before, after = pattern.split("*")
    rx = re.compile("^" + re.escape(before) + r"(\d+)" + re.escape(after) + "$")
    files = {}
    for name in sorted(os.listdir(folder)):
        m = rx.match(name)
        if m:
            t = int(m.group(1))
            if t in files:
                raise DataError.at(folder, f"two mask files for frame {t}", got=[os.path.basename(files[t]), name],
                                   fix="keep one file per frame")
            files[t] = os.path.join(folder, name)
    if not files and required:
        raise DataError.at(folder, f"no mask files match {pattern!r}", got=sorted(os.listdir(folder))[:5],
                           fix="check --mask-pattern ('*' stands for the frame number)")
    return files


def read_ctc_tracks(path, where: str | None = None) -> np.ndarray:
    """``man_track.txt`` / ``res_track.txt`` as an (n, 4) int64 table of rows ``L B E P``."""
    path = os.fspath(path)
    where = where or path
    if not os.path.isfile(path):
        raise DataError.at(where, "track file not found", got=path, fix="expect man_track.txt or res_track.txt")
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                row = [int(p) for p in parts]
            except ValueError:
                row = []
            if len(row) != 4:
                raise DataError.at(f"{where}:{i}", "expected 4 integers 'L B E P'", got=line.strip(),
                                   fix="each line is: label, begin frame, end frame, parent label")
            rows.append(row)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _locate(folder: str, sequence: str | None, gt: bool, where: str, pattern: str | None = None):
    """(raw folder or None, label folder, track file, mask prefix, sequence name) for the accepted layouts."""
    p = Path(os.path.abspath(folder))
    if not p.is_dir():
        raise DataError.at(where, "CTC folder not found", got=folder,
                           fix="pass the dataset root, 01, 01_GT/TRA or 01_RES")
    if p.name == "TRA" and p.parent.name.endswith("_GT"):
        seq, root, labels, gt = p.parent.name[:-3], p.parent.parent, p, True
    elif p.name.endswith("_GT") and (p / "TRA").is_dir():
        seq, root, labels, gt = p.name[:-3], p.parent, p / "TRA", True
    elif p.name.endswith("_RES"):
        seq, root, labels, gt = p.name[:-4], p.parent, p, False
    elif (p / "man_track.txt").is_file() or (p / "res_track.txt").is_file():
        gt = (p / "man_track.txt").is_file()
        seq, root, labels = p.name, None, p
    elif mask_files(str(p), "man_track", required=False) or mask_files(str(p), "mask", required=False):
        gt = bool(mask_files(str(p), "man_track", required=False))  # masks whose table lives elsewhere
        seq, root, labels = p.name, None, p
    elif pattern is not None and mask_files(str(p), "", pattern, required=False):
        seq, root, labels = p.name, None, p
    else:
        if sequence is None and numbered_files(str(p), (".tif", ".tiff"), "t"):
            seq, root = p.name, p.parent  # the raw folder itself
        else:
            if sequence is None:
                found = sorted(c.name for c in p.iterdir() if c.is_dir() and _SEQ.match(c.name))
                if len(found) != 1:
                    raise ConfigError.at(where, "cannot tell which sequence to read", got=found,
                                         fix="pass sequence='01' (one of the numbered folders)")
                sequence = found[0]
            seq, root = str(sequence), p
        labels = root / (f"{seq}_GT/TRA" if gt else f"{seq}_RES")
    track = labels / ("man_track.txt" if gt else "res_track.txt")
    prefix = "man_track" if gt else "mask"
    if not labels.is_dir():
        raise DataError.at(where, f"label folder not found: {labels}",
                           fix="check the layout (01_GT/TRA for gt=True, 01_RES for gt=False)")
    raw = root / seq if root is not None and (root / seq).is_dir() else None
    return raw, labels, track, prefix, seq


def instances_from_labels(labels: np.ndarray, t: int) -> Instances:
    """One instance per label id of a (H, W) or (Z, H, W) label image: centroid point (x, y)
    (+ ``z``), box = the mask's x/y extent in pixel edges, ``mask_ids`` = ``track_ids`` = the id."""
    lab = np.asarray(labels)
    ids, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(lab.shape)
    if len(ids) and ids[0] == 0:
        ids = ids[1:]
    else:
        inv = inv + 1
    n = len(ids)
    if n == 0:
        return Instances(frame=t, points=np.zeros((0, 1, 2)), boxes=np.zeros((0, 4)), track_ids=[],
                         mask_ids=np.zeros(0, np.int64), z=np.zeros(0) if lab.ndim == 3 else None)
    index = np.arange(1, n + 1)
    com = np.asarray(ndimage.center_of_mass(np.ones(lab.shape, np.float32), inv, index)).reshape(n, lab.ndim)
    slices = ndimage.find_objects(inv, max_label=n)
    boxes = np.array([[s[-1].start - 0.5, s[-2].start - 0.5, s[-1].stop - 0.5, s[-2].stop - 0.5]
                      for s in slices], dtype=np.float64)
    ids = ids.astype(np.int64)
    return Instances(frame=t, points=com[:, None, [-1, -2]], boxes=boxes, track_ids=ids, mask_ids=ids.copy(),
                     z=com[:, 0].copy() if lab.ndim == 3 else None)


class _LabelFrames:
    """Label image of frame t (zeros where the folder has no file for t)."""

    def __init__(self, files: dict[int, str], n: int, shape: tuple[int, ...]):
        self.files, self.n, self.shape = files, n, shape

    def __call__(self, t: int) -> np.ndarray:
        import tifffile

        if t in self.files:
            return np.asarray(tifffile.imread(self.files[t]))
        if not 0 <= t < self.n:
            raise DataError.at(str(Path(next(iter(self.files.values()))).parent), f"no frame {t}",
                               got=self.n, fix=f"ask for frames 0..{self.n - 1}")
        return np.zeros(self.shape, np.uint16)


def read_ctc(folder, *, gt: bool = True, sequence: str | None = None, raw=None, track_file=None,
             where: str | None = None, pattern: str | None = None) -> tuple[TrackSequence, np.ndarray]:
    """A CTC sequence and its track table (``read_ctc_tracks``: rows L B E P).

    ``folder`` may be the dataset root (with ``sequence='01'``, or the only numbered folder), the
    raw folder ``01``, the ground-truth folder ``01_GT`` or ``01_GT/TRA``, or a result folder
    ``01_RES``; a label folder decides ``gt`` by itself. Every label image is read once here to
    build the instances (``instances_from_labels``); frames and labels are read lazily afterwards.
    ``raw`` (a folder of ``tNNN.tif``) and ``track_file`` (the L B E P table, the reference's
    ``gt_list``) override the places the layout implies; ``pattern`` names mask files that do not
    follow the CTC names (``mask_files``).
    """
    folder = os.fspath(folder)
    where = where or folder
    raw_override = raw
    raw, labels_dir, track, prefix, seq = _locate(folder, sequence, gt, where, pattern)
    if raw_override is not None:
        raw = Path(raw_override)
    if track_file is not None:
        track = Path(track_file)
    files = mask_files(str(labels_dir), prefix, pattern)
    raw_files = numbered_files(str(raw), (".tif", ".tiff"), "t") if raw is not None else {}
    n = max(max(files), max(raw_files, default=-1)) + 1
    table = read_ctc_tracks(track, str(track))
    frames, shape = [], None
    for t in range(n):
        if t in files:
            import tifffile

            lab = np.asarray(tifffile.imread(files[t]))
            shape = shape or lab.shape
            frames.append(instances_from_labels(lab, t))
        else:
            frames.append(None)
    ndim = len(shape)
    empty = instances_from_labels(np.zeros((1,) * ndim, np.uint16), 0)
    frames = [f if f is not None else Instances(frame=t, points=empty.points, boxes=empty.boxes, track_ids=[],
                                                mask_ids=empty.mask_ids, z=empty.z) for t, f in enumerate(frames)]
    if raw is not None:
        read_frame = ImageFrames([raw_files.get(t) for t in range(n)], volumetric=ndim == 3, where=str(raw))
    else:
        read_frame = MissingFrames(where, "no raw frames next to these labels",
                                   f"put the raw tifs in a folder named {seq} beside the label folder")
    seq_seq = TrackSequence(name=seq, frames=frames, read_frame=read_frame, node_names=["centroid"],
                            read_labels=_LabelFrames(files, n, shape), image_hw=tuple(shape[-2:]),
                            source=str(labels_dir), ndim=ndim)
    return seq_seq, table


def _segments(sequence: TrackSequence, parents: Mapping[int, int] | None):
    """Per frame {mask id: CTC label} and the L B E P table, splitting tracks at gaps."""
    all_ids = sequence.track_ids()
    next_label = int(all_ids.max()) + 2 if len(all_ids) else 1
    current: dict[int, int] = {}  # track id -> its current label
    rows: dict[int, list[int]] = {}  # label -> [L, B, E, P]
    history: dict[int, list[int]] = {}  # track id -> its labels in order
    per_frame = []
    for t, inst in enumerate(sequence.frames):
        mapping = {}
        if len(inst) and inst.mask_ids is None:
            raise DataError.at(sequence.source or sequence.name, f"frame {t} has instances without mask_ids",
                               fix="write_ctc needs instances read from label images (read_ctc)")
        for m, k in zip(inst.mask_ids if len(inst) else [], inst.track_ids):
            k = int(k)
            if k < 0:
                continue
            if k not in current:
                label, parent = k + 1, 0
            elif rows[current[k]][2] < t - 1:  # reappears after a gap: new label, old one is its parent
                label, parent = next_label, current[k]
                next_label += 1
            else:
                label = current[k]
            if label not in rows:
                rows[label] = [label, t, t, parent]
                current[k] = label
                history.setdefault(k, []).append(label)
            rows[label][2] = t
            mapping[int(m)] = label
        per_frame.append(mapping)
    for k, p in (parents or {}).items():
        if int(k) not in history or int(p) not in history:
            continue
        first = rows[history[int(k)][0]]
        ended = [lab for lab in history[int(p)] if rows[lab][2] < first[1]]
        if ended:
            first[3] = ended[-1]
    return per_frame, np.asarray(sorted(rows.values()), dtype=np.int64).reshape(-1, 4)


def write_ctc(folder, sequence: TrackSequence, masks_fn: Callable[[int], np.ndarray] | None = None, *,
              parents: Mapping[int, int] | None = None, digits: int | None = None) -> np.ndarray:
    """Write a CTC result folder: ``maskNNN.tif`` per frame + ``res_track.txt``; returns the table.

    The masks are ``masks_fn(t)`` (default ``sequence.read_labels``) relabelled: pixels of an
    instance's ``mask_ids`` get its predicted track id + 1, other pixels 0. A track id that
    reappears after missing frames starts a new label (max track id + 2, + 3, ...) whose parent
    is its previous label, so every label is continuous as CTC requires. ``parents`` ({track id:
    parent track id}) adds lineage. Masks are uint16, or uint32 when a label exceeds 65535.
    Existing ``maskNNN.tif`` files in ``folder`` are replaced.
    """
    import tifffile

    out = Path(folder)
    masks_fn = masks_fn or sequence.read_labels
    if masks_fn is None:
        raise ConfigError.at(str(out), "no label images to relabel", fix="pass masks_fn=(t -> label image)")
    per_frame, table = _segments(sequence, parents)
    dtype = np.uint16 if (table[:, 0].max() if len(table) else 0) <= 65535 else np.uint32
    n = len(sequence)
    digits = digits or max(3, len(str(n - 1)))
    out.mkdir(parents=True, exist_ok=True)
    for old in numbered_files(str(out), (".tif",), "mask").values():
        os.remove(old)
    shapes = {}
    for t in range(n):
        mask = masks_fn(t)
        if mask is None:
            mask = np.zeros(shapes.get("last") or _first_shape(masks_fn, n), np.uint16)
        mask = np.asarray(mask)
        shapes["last"] = mask.shape
        ids, inv = np.unique(mask, return_inverse=True)
        mapping = per_frame[t]
        missing = sorted(set(mapping) - set(int(i) for i in ids))
        if missing:
            raise DataError.at(sequence.source or sequence.name, f"frame {t}: mask ids {missing} of its "
                               "instances are not in the label image", fix="pass the label images the "
                               "instances were read from")
        lut = np.array([mapping.get(int(i), 0) for i in ids], dtype=dtype)
        tifffile.imwrite(out / f"mask{t:0{digits}d}.tif", lut[inv.reshape(mask.shape)], compression="zlib")
    with open(out / "res_track.txt", "w") as f:
        f.writelines(f"{l} {b} {e} {p}\n" for l, b, e, p in table)
    return table


def _first_shape(masks_fn, n):
    for t in range(n):
        m = masks_fn(t)
        if m is not None:
            return np.asarray(m).shape
    raise DataError.at("write_ctc", "masks_fn returned no label image for any frame", fix="check masks_fn")


def check_ctc(folder, pattern: str | None = None) -> list[str]:
    """Problems that CTC / traccuracy evaluation would reject in a result (or TRA) folder; [] = valid."""
    import tifffile

    folder = os.fspath(folder)
    p = Path(folder)
    gt = (p / "man_track.txt").is_file()
    track, prefix = (p / "man_track.txt", "man_track") if gt else (p / "res_track.txt", "mask")
    if not p.is_dir() or not track.is_file():
        return [f"{folder}: no res_track.txt or man_track.txt"]
    try:
        table = read_ctc_tracks(track)
        files = mask_files(folder, prefix, pattern)
    except DataError as exc:
        return [str(exc)]
    problems, seen, shape = [], {}, None
    for t, path in sorted(files.items()):
        mask = np.asarray(tifffile.imread(path))
        if not np.issubdtype(mask.dtype, np.integer):
            problems.append(f"{path}: masks must have an integer type (got {mask.dtype})")
            continue
        if shape is not None and mask.shape != shape:
            problems.append(f"{path}: shape {mask.shape} differs from the first mask's {shape}")
        shape = shape or mask.shape
        for lab in np.unique(mask):
            if lab < 0:
                problems.append(f"{path}: negative label {int(lab)}")
            elif lab > 0:
                seen.setdefault(int(lab), []).append(t)
    listed = {}
    for lab, b, e, par in table.tolist():
        if lab <= 0:
            problems.append(f"{track}: label {lab} must be > 0")
        if lab in listed:
            problems.append(f"{track}: label {lab} is listed twice")
        if b > e:
            problems.append(f"{track}: label {lab} begins at {b} after it ends at {e}")
        listed[lab] = (b, e, par)
    for lab, (b, e, par) in listed.items():
        frames = set(seen.get(lab, []))
        missing = sorted(set(range(b, e + 1)) - frames)
        extra = sorted(frames - set(range(b, e + 1)))
        if missing:
            problems.append(f"{track}: label {lab} is listed for frames {b}..{e} but missing from frames {missing}")
        if extra:
            problems.append(f"{track}: label {lab} is listed for frames {b}..{e} but also in frames {extra}")
        if par != 0:
            if par not in listed:
                problems.append(f"{track}: label {lab} has parent {par}, which is not listed")
            elif listed[par][1] >= b:
                problems.append(f"{track}: parent {par} of label {lab} ends at frame {listed[par][1]}, "
                                f"not before its child begins ({b})")
    for lab in sorted(set(seen) - set(listed)):
        problems.append(f"{folder}: mask label {lab} (frames {seen[lab][0]}..{seen[lab][-1]}) is not "
                        f"listed in {track.name}")
    return problems
