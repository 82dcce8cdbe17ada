"""Keypoint label files (DLC / Lightning Pose CSV, DLC .h5, SLEAP .slp) as one structure.

Coordinates are (x, y) frame pixels with pixel centres at integers, as in DLC and SLEAP
(sleap-io converts legacy .slp files); missing points are NaN. Relative image paths are
resolved against the label file's folder; when nothing exists there but does under one of
its parents (a DLC project keeps ``labeled-data/<video>/CollectedData_*.csv`` with paths
relative to the project root), that parent is used instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import numpy as np
import pandas as pd

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError, DataError

__all__ = ["PoseLabels", "read_dlc_csv", "read_dlc_h5", "read_slp", "read_labels",
           "check_keypoints", "write_dlc_csv"]

_COORDS = ("x", "y", "likelihood", "visible")
_HEADER_NAMES = ("scorer", "individuals", "bodyparts", "coords")
_SINGLE = "animal"


def _f32(value):
    return np.asarray(value, dtype=np.float32)


@attrs.define(eq=False)
class PoseLabels:
    """Labeled (or predicted) keypoints of N frames, A animals and K keypoints.

    ``image_paths[i]`` is "" for a frame that comes from a video; then ``video_paths[i]``
    and ``frame_indices[i]`` locate it. ``visible`` and ``likelihood`` are (N, A, K) or None.
    """

    keypoints: np.ndarray = attrs.field(converter=_f32)  # (N, A, K, 2)
    keypoint_names: list[str] = attrs.field(converter=list)
    image_paths: list[str] = attrs.field(converter=list)
    individuals: list[str] = attrs.field(factory=lambda: [_SINGLE], converter=list)
    visible: np.ndarray | None = None
    likelihood: np.ndarray | None = None
    video_paths: list[str] | None = None
    frame_indices: np.ndarray | None = None
    scorer: str = ""
    source: str = ""

    def __attrs_post_init__(self):
        n, a, k = self.num_frames, self.num_animals, self.num_keypoints
        if self.keypoints.ndim != 4 or self.keypoints.shape[3] != 2:
            raise ValueError(f"keypoints must be (N, A, K, 2) (got {self.keypoints.shape})")
        if len(self.image_paths) != n or len(self.individuals) != a \
                or len(self.keypoint_names) != k:
            raise ValueError("image_paths, individuals and keypoint_names must match the "
                             f"keypoints shape {self.keypoints.shape}")
        for name in ("visible", "likelihood"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n, a, k):
                raise ValueError(f"{name} must be (N, A, K) = {(n, a, k)} "
                                 f"(got {np.shape(value)})")
        if self.visible is not None:
            self.visible = np.asarray(self.visible, dtype=bool)
        if self.likelihood is not None:
            self.likelihood = _f32(self.likelihood)
        if self.frame_indices is not None:
            self.frame_indices = np.asarray(self.frame_indices, dtype=np.int64)

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def num_animals(self) -> int:
        return int(self.keypoints.shape[1])

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoints.shape[2])

    @property
    def is_multi_animal(self) -> bool:
        return self.num_animals > 1

    def groups(self) -> list[str]:
        """Per frame, the video it comes from (a video file, else the image's folder)."""
        out = []
        for i, image in enumerate(self.image_paths):
            video = self.video_paths[i] if self.video_paths else ""
            out.append(video or str(Path(image).parent))
        return out

    def select_keypoints(self, names) -> "PoseLabels":
        """A copy holding only ``names``, in that order."""
        index = [self.keypoint_names.index(n) for n in names]
        pick = (lambda v: None if v is None else v[:, :, index])
        return attrs.evolve(self, keypoints=self.keypoints[:, :, index],
                            keypoint_names=list(names), visible=pick(self.visible),
                            likelihood=pick(self.likelihood))


# ---------------------------------------------------------------------------- readers

def read_labels(path, **kwargs) -> PoseLabels:
    """Read a .csv, .h5/.hdf5 or .slp label file."""
    name = str(path).lower()
    if name.endswith(".csv"):
        return read_dlc_csv(path, **kwargs)
    if name.endswith((".h5", ".hdf5")):
        return read_dlc_h5(path, **kwargs)
    if name.endswith(".slp"):
        return read_slp(path, **kwargs)
    raise DataError.at(str(path), "unknown label file type", got=Path(path).suffix,
                       fix="use a DLC/Lightning Pose .csv, a DLC .h5 or a SLEAP .slp file")


def read_dlc_csv(path, *, root=None) -> PoseLabels:
    """Read a DLC / Lightning Pose CSV (3 header rows, or 4 with ``individuals``).

    The image path is the first column, or split over three ('labeled-data', video, file);
    an integer first column is read as frame indices of a video (prediction files).
    """
    where = str(path)
    if not os.path.isfile(where):
        raise DataError.at(where, "label file not found", fix="check the path")
    raw = pd.read_csv(where, header=None, dtype=str, keep_default_na=False)
    first = [str(v).strip() for v in raw.iloc[:5, 0]]
    if "coords" not in first:
        raise DataError.at(where, "not a DLC-style CSV: no 'coords' header row in the first "
                           "rows", got=first, fix="the header rows are scorer, (individuals,) "
                           "bodyparts, coords")
    n_header = first.index("coords") + 1
    coords_row = [str(v).strip() for v in raw.iloc[n_header - 1]]
    n_index = next((i for i, v in enumerate(coords_row) if v in _COORDS), len(coords_row))
    if n_index == 0 or n_index == len(coords_row):
        raise DataError.at(where, "cannot find the image-path and coordinate columns",
                           got=coords_row[:6], fix="coords must be x, y (, likelihood/visible)")
    header = raw.iloc[:n_header, n_index:].astype(str).map(str.strip)
    body = raw.iloc[n_header:]
    index = [tuple(str(v).strip() for v in row) for row in body.iloc[:, :n_index].to_numpy()]
    cells = body.iloc[:, n_index:].to_numpy()
    if len(index) and all(c.strip() == "" for c in cells[0]) and "." not in index[0][-1]:
        index, cells = index[1:], cells[1:]  # a pandas index-names row
    values = np.full(cells.shape, np.nan)
    for (r, c), cell in np.ndenumerate(cells):
        text = str(cell).strip()
        if text.lower() in ("true", "false"):
            values[r, c] = float(text.lower() == "true")
        elif text:
            try:
                values[r, c] = float(text)
            except ValueError:
                raise DataError.at(f"{where}: row {r + n_header + 1}", "not a number",
                                   got=text, fix="cells hold numbers or are empty") from None
    names = [str(v).strip() for v in raw.iloc[:n_header, 0]]
    columns = _columns(names, header.to_numpy().T.tolist(), where)
    scorer = str(header.iloc[0, 0]) if header.shape[1] else ""
    return _build(columns, index, values, where, root, scorer)


def read_dlc_h5(path, *, key=None, root=None) -> PoseLabels:
    """Read a DLC .h5 (pandas HDF; key 'df_with_missing' or the file's only key)."""
    where = str(path)
    if not os.path.isfile(where):
        raise DataError.at(where, "label file not found", fix="check the path")
    with pd.HDFStore(where, mode="r") as store:
        keys = [k.lstrip("/") for k in store.keys()]
    if key is None:
        if "df_with_missing" in keys or len(keys) != 1:
            key = "df_with_missing"
        else:
            key = keys[0]
    if key not in keys:
        raise DataError.at(where, f"no table '{key}' in the file", got=keys,
                           fix="pass key= one of the file's keys")
    df = pd.read_hdf(where, key=key)
    cols = df.columns
    if not isinstance(cols, pd.MultiIndex) or cols.nlevels not in (3, 4):
        raise DataError.at(where, "expected 3 or 4 column levels (scorer, (individuals,) "
                           "bodyparts, coords)", got=getattr(cols, "nlevels", 1))
    names = [str(n) for n in cols.names]
    if not {"bodyparts", "coords"} <= set(names):  # unnamed levels: DLC's order
        names = list(_HEADER_NAMES) if cols.nlevels == 4 else ["scorer", "bodyparts", "coords"]
    columns = _columns(names, [[str(p) for p in c] for c in cols], where)
    index = [tuple(str(p) for p in i) if isinstance(i, tuple) else (str(i),)
             for i in df.index]
    values = df.to_numpy(dtype=float, na_value=np.nan)
    return _build(columns, index, values, where, root, str(cols[0][0]) if len(cols) else "")


def read_slp(path, *, include_predicted: bool = False, root=None) -> PoseLabels:
    """Read user instances (and, optionally, predicted ones) from a SLEAP .slp file.

    Animals are slotted by track when every instance has one, else in file order.
    A user instance replaces the prediction it was made from.
    """
    import sleap_io as sio

    where = str(path)
    if not os.path.isfile(where):
        raise DataError.at(where, "label file not found", fix="check the path")
    labels = sio.load_slp(where, open_videos=False)
    if len(labels.skeletons) != 1:
        raise DataError.at(where, "expected exactly one skeleton",
                           got=len(labels.skeletons), fix="split the file per skeleton")
    names = list(labels.skeletons[0].node_names)
    frames = []
    for lf in labels.labeled_frames:
        insts = list(lf.user_instances)
        if include_predicted:
            used = {id(i.from_predicted) for i in insts if i.from_predicted is not None}
            insts += [p for p in lf.predicted_instances if id(p) not in used]
        if insts or lf.is_negative:
            frames.append((lf, insts))
    if not frames:
        raise DataError.at(where, "no labeled frames", fix="label some frames, or pass "
                           "include_predicted=True to read predictions")
    tracked = all(i.track is not None for _, insts in frames for i in insts)
    tracks = list(labels.tracks)
    if tracked and tracks:
        individuals = [t.name or f"track{j}" for j, t in enumerate(tracks)]
    else:
        individuals = [f"animal{j}" for j in range(max(len(i) for _, i in frames) or 1)]
    n, a, k = len(frames), len(individuals), len(names)
    xy = np.full((n, a, k, 2), np.nan)
    vis = np.zeros((n, a, k), bool)
    score = np.full((n, a, k), np.nan)
    images, videos, fidx = [], [], []
    base = Path(where).parent if root is None else Path(root)
    for r, (lf, insts) in enumerate(frames):
        for j, inst in enumerate(insts):
            slot = tracks.index(inst.track) if tracked and tracks else j
            xy[r, slot] = inst.numpy()[:, :2]
            vis[r, slot] = inst.points["visible"]
            if "score" in inst.points.dtype.names:
                score[r, slot] = inst.points["score"]
            elif include_predicted:
                score[r, slot] = np.where(vis[r, slot], 1.0, np.nan)
        filename = lf.video.filename
        if isinstance(filename, (list, tuple)):
            images.append(_resolve(filename[lf.frame_idx], base))
            videos.append("")
        else:
            images.append("")
            videos.append(_resolve(filename, base))
        fidx.append(lf.frame_idx)
    return PoseLabels(keypoints=xy, keypoint_names=names, image_paths=images,
                      individuals=individuals, visible=vis,
                      likelihood=score if include_predicted else None, video_paths=videos,
                      frame_indices=np.asarray(fidx), scorer="sleap", source=where)


def _columns(names, columns, where) -> list[tuple[str, str, str]]:
    """(individual, bodypart, coord) per value column, from the header rows."""
    level = {n: i for i, n in enumerate(names)}
    if "bodyparts" not in level or "coords" not in level:
        raise DataError.at(where, "the header rows need 'bodyparts' and 'coords'",
                           got=names, fix="use DLC's header: scorer, (individuals,) "
                           "bodyparts, coords")
    out = []
    for col in columns:
        ind = col[level["individuals"]] if "individuals" in level else _SINGLE
        coord = col[level["coords"]]
        if coord not in _COORDS:
            raise DataError.at(where, f"unknown coords entry for '{col[level['bodyparts']]}'",
                               got=coord, fix=f"use one of {', '.join(_COORDS)}")
        out.append((ind, col[level["bodyparts"]], coord))
    return out


def _build(columns, index, values, where, root, scorer) -> PoseLabels:
    individuals = list(dict.fromkeys(c[0] for c in columns))
    names = list(dict.fromkeys(c[1] for c in columns))
    coords = {c[2] for c in columns}
    if not {"x", "y"} <= coords:
        raise DataError.at(where, "the file needs x and y columns", got=sorted(coords))
    n, a, k = len(index), len(individuals), len(names)
    xy = np.full((n, a, k, 2), np.nan)
    extra = {"visible": np.full((n, a, k), np.nan), "likelihood": np.full((n, a, k), np.nan)}
    for c, (ind, bp, coord) in enumerate(columns):
        i, j = individuals.index(ind), names.index(bp)
        if coord in ("x", "y"):
            xy[:, i, j, "xy".index(coord)] = values[:, c]
        else:
            extra[coord][:, i, j] = values[:, c]
    visible = None
    if "visible" in coords:
        visible = np.nan_to_num(extra["visible"], nan=0.0) > 0.5
    likelihood = extra["likelihood"] if "likelihood" in coords else None
    images, frames = _paths(index, where, root)
    return PoseLabels(keypoints=xy, keypoint_names=names, image_paths=images,
                      individuals=individuals, visible=visible, likelihood=likelihood,
                      frame_indices=frames, scorer=scorer, source=where)


def _paths(index, where, root):
    """Resolved image paths (and frame indices for an integer index)."""
    if index and all(len(i) == 1 and i[0].lstrip("-").isdigit() for i in index):
        return [""] * len(index), np.asarray([int(i[0]) for i in index])
    rel = ["/".join(p for p in i if p) for i in index]
    if root is None:
        root = Path(where).resolve().parent
        probe = next((r for r in rel if r and not os.path.isabs(r)), None)
        if probe is not None and not (root / probe).exists():
            found = [p for p in list(root.parents)[:3] if (p / probe).exists()]
            root = found[0] if found else root
    return [_resolve(r, Path(root)) for r in rel], None


def _resolve(path: str, base: Path) -> str:
    return str(path) if not path or os.path.isabs(path) else str(base / path)


# ---------------------------------------------------------------------------- checks

def check_keypoints(labels: PoseLabels, keypoint_names=None, num_keypoints=None, *,
                    where: str = "config") -> PoseLabels:
    """Check the configured keypoints against the file; return labels in the config's order.

    ``keypoint_names`` must name every keypoint of the file (in any order) and nothing else.
    """
    file = labels.source or "the label file"
    have = labels.keypoint_names
    if num_keypoints is not None and int(num_keypoints) != len(have):
        raise ConfigError.at(where, f"num_keypoints does not match the {len(have)} keypoints "
                             f"in {file} ({', '.join(have)})", got=num_keypoints,
                             fix=f"set num_keypoints = {len(have)}")
    if keypoint_names is None:
        return labels
    names = [str(n) for n in keypoint_names]
    if num_keypoints is not None and len(names) != int(num_keypoints):
        raise ConfigError.at(where, f"keypoint_names lists {len(names)} names but "
                             f"num_keypoints is {num_keypoints}", got=names,
                             fix="make them agree")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError.at(where, "keypoint_names repeats a name", got=dupes,
                             fix="list each keypoint once")
    for name in names:
        if name not in have:
            raise ConfigError.at(where, f"keypoint_names has '{name}', which is not a "
                                 f"keypoint in {file}{did_you_mean(name, have)}", got=names,
                                 fix=f"the file's keypoints are: {', '.join(have)}")
    absent = [n for n in have if n not in names]
    if absent:
        raise ConfigError.at(where, f"keypoint_names misses keypoint(s) of {file}",
                             got=absent, fix="add them to keypoint_names")
    return labels.select_keypoints(names)


# ---------------------------------------------------------------------------- writer

def write_dlc_csv(path, labels_or_arrays, scorer: str = "bioloop", likelihood=None, *,
                  keypoint_names=None, image_paths=None, frame_indices=None,
                  individuals=None, root=None) -> Path:
    """Write keypoints as a DLC-style CSV with x, y, likelihood columns.

    Takes a PoseLabels or an (N, K, 2) / (N, A, K, 2) array (then ``keypoint_names`` is
    required). One animal gives DLC's 3 header rows (read back with ``header=[0,1,2]``),
    several give 4 (``header=[0,1,2,3]``). The index is the image paths (relative to ``root``,
    default the CSV's folder, when inside it, e.g. ``labeled-data/video0/img0000.png`` for a
    project's ``data_dir``; absolute otherwise) or, without images, the frame indices.
    """
    if isinstance(labels_or_arrays, PoseLabels):
        lab = labels_or_arrays
        xy, names, inds = lab.keypoints, lab.keypoint_names, lab.individuals
        likelihood = lab.likelihood if likelihood is None else likelihood
        image_paths = lab.image_paths if image_paths is None else image_paths
        frame_indices = lab.frame_indices if frame_indices is None else frame_indices
    else:
        xy = np.asarray(labels_or_arrays, dtype=float)
        xy = xy[:, None] if xy.ndim == 3 else xy
        if keypoint_names is None:
            raise ValueError("write_dlc_csv needs keypoint_names when given an array")
        names = list(keypoint_names)
        inds = individuals or [f"animal{i}" for i in range(xy.shape[1])]
    n, a, k = xy.shape[:3]
    like = np.full((n, a, k), np.nan) if likelihood is None else \
        np.asarray(likelihood, dtype=float).reshape(n, a, k)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image_paths is not None and any(image_paths):
        base = path.parent if root is None else Path(root)
        index = pd.Index([_relative(p, base) for p in image_paths])
    else:
        index = pd.RangeIndex(n) if frame_indices is None else pd.Index(
            np.asarray(frame_indices, dtype=np.int64))
    data = np.stack([xy[..., 0], xy[..., 1], like], axis=-1).reshape(n, -1)
    if a == 1:
        cols = pd.MultiIndex.from_product([[scorer], names, ["x", "y", "likelihood"]],
                                          names=["scorer", "bodyparts", "coords"])
    else:
        cols = pd.MultiIndex.from_product([[scorer], inds, names, ["x", "y", "likelihood"]],
                                          names=list(_HEADER_NAMES))
    pd.DataFrame(data, index=index, columns=cols).to_csv(path)
    return path


def check_files(labels, where: str) -> None:
    """Every labeled image and video of ``labels`` exists, or one DataError listing the missing ones."""
    wanted = [p for p in labels.image_paths if p] + sorted({v for v in (labels.video_paths or []) if v})
    missing = list(dict.fromkeys(p for p in wanted if not os.path.isfile(p)))
    if missing:
        shown = missing[:10] + ([f"... ({len(missing) - 10} more)"] if len(missing) > 10 else [])
        raise DataError.at(where, f"{len(missing)} of the {len(wanted)} labeled images/videos are missing",
                           got=shown, fix="restore them, or fix the paths in the labels file (they are "
                           "relative to its folder)")


def _relative(image: str, folder: Path) -> str:
    if not image:
        return image
    try:
        return Path(image).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(image)
