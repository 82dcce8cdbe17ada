"""MOTChallenge txt (read and write) and TrackMate spots CSV (read) as ``TrackSequence``s.

MOTChallenge rows are ``frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z`` with 1-based
frames and boxes in the pixel-edge convention (pixel i covers [i, i+1)); ours puts pixel centres at
integers, so ``x0 = bb_left - 0.5`` and ``x1 = x0 + bb_width`` (likewise y). Ids are kept as written.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from bioloop.errors import DataError
from bioloop.tasks.tracking.io_frames import frame_source
from bioloop.tasks.tracking.types import Instances, TrackSequence

__all__ = ["read_mot", "read_trackmate", "write_mot"]


def _build_frames(t_idx, ids, boxes, scores, n, z=None) -> list[Instances]:
    """Group rows by frame into ``n`` Instances (points = box centres)."""
    order = np.argsort(t_idx, kind="stable")
    t_idx, ids, boxes, scores = t_idx[order], ids[order], boxes[order], scores[order]
    z = None if z is None else z[order]
    starts = np.searchsorted(t_idx, np.arange(n + 1))
    frames = []
    for t in range(n):
        s = slice(starts[t], starts[t + 1])
        b = boxes[s]
        frames.append(Instances(frame=t, points=((b[:, :2] + b[:, 2:]) / 2)[:, None, :].reshape(-1, 1, 2),
                                boxes=b, track_ids=ids[s], scores=scores[s],
                                z=None if z is None else z[s].copy()))
    return frames


def _default_mot_images(txt: Path) -> Path | None:
    for cand in (txt.parent.parent / "img1", txt.parent / "img1"):
        if cand.is_dir():
            return cand
    return None


def read_mot(txt_path, images=None, *, where: str | None = None) -> TrackSequence:
    """A MOTChallenge txt (gt.txt, det.txt or a tracker's result) as one sequence.

    ``images``: the frames (an image folder where file 000001 is frame 1, or a video whose first
    frame is frame 1); by default ``img1`` beside the txt's folder (MOT layout ``SEQ/gt/gt.txt`` +
    ``SEQ/img1``). Scores are the conf column (1 when absent); points are the box centres.
    """
    txt = Path(os.fspath(txt_path))
    where = where or str(txt)
    if not txt.is_file():
        raise DataError.at(where, "MOT file not found", got=str(txt), fix="check the path")
    rows = []
    with open(txt) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",") if "," in line else line.split()
            try:
                vals = [float(p) for p in parts[:7]]
            except ValueError:
                vals = []
            if len(vals) < 6:
                raise DataError.at(f"{where}:{i}", "expected 'frame,id,bb_left,bb_top,bb_width,bb_height[,conf,...]'",
                                   got=line, fix="write one box per line, comma-separated")
            if not all(math.isfinite(v) for v in vals[:6]):
                raise DataError.at(f"{where}:{i}", "frame, id and box must be finite numbers", got=line,
                                   fix="write numbers (no NaN or inf) in the first six columns")
            if vals[0] < 1 or vals[0] != int(vals[0]):
                raise DataError.at(f"{where}:{i}", "frame numbers are integers starting at 1", got=parts[0],
                                   fix="MOTChallenge frames are 1-based")
            rows.append(vals + [1.0] * (7 - len(vals)))
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    t_idx = arr[:, 0].astype(np.int64) - 1
    boxes = np.stack([arr[:, 2] - 0.5, arr[:, 3] - 0.5, arr[:, 2] - 0.5 + arr[:, 4], arr[:, 3] - 0.5 + arr[:, 5]], 1)
    if images is None:
        images = _default_mot_images(txt)
    n = int(t_idx.max()) + 1 if len(t_idx) else 0
    source, n, hw = frame_source(images, n, where, first_number=1)
    frames = _build_frames(t_idx, arr[:, 1].astype(np.int64), boxes, arr[:, 6], n)
    name = txt.parent.parent.name if txt.parent.name in ("gt", "det") else txt.stem
    return TrackSequence(name=name, frames=frames, read_frame=source, node_names=["centroid"], image_hw=hw,
                         source=str(txt))


def _fmt(v: float) -> str:
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def write_mot(path, sequence: TrackSequence) -> Path:
    """Write ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1`` lines (1-based frames,
    pixel-edge boxes; ``read_mot`` reads them back). Instances with id -1 or no finite box are left out."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for t, inst in enumerate(sequence.frames):
        for j in np.argsort(inst.track_ids, kind="stable"):
            k, b = int(inst.track_ids[j]), inst.boxes[j]
            if k < 0 or not np.isfinite(b).all():
                continue
            vals = [b[0] + 0.5, b[1] + 0.5, b[2] - b[0], b[3] - b[1], float(inst.scores[j])]
            lines.append(f"{t + 1},{k}," + ",".join(_fmt(v) for v in vals) + ",-1,-1,-1\n")
    with open(out, "w") as f:
        f.writelines(lines)
    return out


_TM_REQUIRED = ("TRACK_ID", "FRAME", "POSITION_X", "POSITION_Y")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_trackmate(csv_path, images=None, *, radius: float = 5.0, pixel_size: float = 1.0,
                   where: str | None = None) -> TrackSequence:
    """A TrackMate spots CSV as one sequence (with or without the 3 extra header rows of TrackMate's
    export: names, short names, units).

    Positions are divided by ``pixel_size`` to give pixels (TrackMate puts pixel centres at integers,
    as we do); boxes are centre +- RADIUS (``radius`` px where the column is missing or empty);
    FRAME is 0-based; a spot without a track (empty, 'None') gets id -1. ``POSITION_Z`` becomes
    ``z`` (ndim 3 when any z differs from 0). ``images``: a tif stack, a video or an image folder.
    """
    path = os.fspath(csv_path)
    where = where or path
    if not os.path.isfile(path):
        raise DataError.at(where, "TrackMate CSV not found", got=path, fix="check the path")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError.at(where, "empty CSV", fix="export the spots table from TrackMate")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _TM_REQUIRED if c not in header]
    if missing:
        raise DataError.at(where, f"missing TrackMate columns {missing}", got=header[:12],
                           fix="export 'Spots' from TrackMate (columns TRACK_ID, FRAME, POSITION_X, POSITION_Y)")
    col = {h: i for i, h in enumerate(header)}
    body = rows[1:]
    skip = 0
    while skip < min(3, len(body)) and _number(body[skip][col["FRAME"]]) is None:
        skip += 1  # TrackMate's name / short-name / unit rows
    ids, t_idx, xyzr = [], [], []
    for i, row in enumerate(body[skip:], 2 + skip):
        if not any(c.strip() for c in row):
            continue
        frame, x, y = (_number(row[col[c]]) for c in ("FRAME", "POSITION_X", "POSITION_Y"))
        if frame is None or x is None or y is None:
            raise DataError.at(f"{where}:{i}", "FRAME, POSITION_X and POSITION_Y must be numbers",
                               got=[row[col[c]] for c in ("FRAME", "POSITION_X", "POSITION_Y")],
                               fix="check the export")
        tid = _number(row[col["TRACK_ID"]].strip() or "nan")
        ids.append(-1 if tid is None or math.isnan(tid) else int(tid))
        z = _number(row[col["POSITION_Z"]]) if "POSITION_Z" in col else None
        r = _number(row[col["RADIUS"]]) if "RADIUS" in col and row[col["RADIUS"]].strip() else None
        t_idx.append(int(frame))
        xyzr.append([x, y, 0.0 if z is None else z, math.nan if r is None else r])
    a = np.asarray(xyzr, dtype=np.float64).reshape(-1, 4) / pixel_size
    r = np.where(np.isfinite(a[:, 3]), a[:, 3], radius)
    boxes = np.stack([a[:, 0] - r, a[:, 1] - r, a[:, 0] + r, a[:, 1] + r], 1)
    t_arr = np.asarray(t_idx, dtype=np.int64)
    if (t_arr < 0).any():
        raise DataError.at(where, "FRAME must be >= 0", got=int(t_arr.min()), fix="check the export")
    volumetric = "POSITION_Z" in col and bool((a[:, 2] != 0).any())
    n = int(t_arr.max()) + 1 if len(t_arr) else 0
    source, n, hw = frame_source(images, n, where, volumetric=volumetric)
    frames = _build_frames(t_arr, np.asarray(ids, dtype=np.int64), boxes, np.ones(len(t_arr)), n,
                           z=a[:, 2] if "POSITION_Z" in col else None)
    return TrackSequence(name=Path(path).stem, frames=frames, read_frame=source, node_names=["centroid"],
                         image_hw=hw, source=path, ndim=3 if volumetric else 2)
