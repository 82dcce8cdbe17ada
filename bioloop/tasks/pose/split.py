"""Train / val / test split of labeled pose frames, grouped by video.

Frames of one video (or one image folder) are near-duplicates, so whole groups go to one
split; with fewer groups than non-empty splits the split falls back to single frames and
says so in ``FrameSplit.note``. The split is a pure function of the labels' groups and the
seed (``rng_seed_data_pt``); ``train_frames`` then subsamples the train frames, so a
smaller ``train_frames`` always gives a subset of a larger one.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from bioloop.errors import ConfigError, DataError

__all__ = ["FrameSplit", "SPLITS", "split_frames", "write_split", "read_split"]

SPLITS = ("train", "val", "test")
_UNUSED = "unused"
_COLUMNS = ("frame", "split", "image", "video", "video_frame")


class FrameSplit(dict):
    """``{"train", "val", "test"}`` -> sorted int64 frame indices; ``note`` is "" or a warning."""

    def __init__(self, parts: dict, note: str = ""):
        super().__init__({k: np.asarray(sorted(int(i) for i in parts.get(k, ())), dtype=np.int64)
                          for k in SPLITS})
        self.note = note

    @property
    def grouped(self) -> bool:
        return not self.note


def split_frames(labels, *, train_prob: float = 0.8, val_prob: float = 0.1, train_frames=None,
                 seed: int = 0, where: str = "training") -> FrameSplit:
    """Split the frames of ``labels`` (a PoseLabels) into train / val / test index arrays.

    Test gets the rest (1 - train_prob - val_prob). ``train_frames``: None / 1 = all train
    frames, a float in (0, 1] = that fraction of them, an int > 1 = that many.
    """
    _check_probs(train_prob, val_prob, where)
    groups = list(labels.groups())
    n = len(groups)
    if n == 0:
        raise DataError.at(labels.source or "labels", "no labeled frames to split",
                           fix="label some frames first")
    targets = _targets(n, train_prob, val_prob)
    needed = sum(t > 0 for t in targets.values())
    names = list(dict.fromkeys(groups))
    rng = np.random.default_rng([int(seed), 0])
    if len(names) >= needed:
        parts = _split_groups(groups, names, targets, rng)
        note = ""
    else:
        parts = _split_single(n, targets, rng)
        note = (f"only {len(names)} video(s)/image folder(s) for {needed} non-empty splits: "
                "frames were split one by one, so near-duplicate frames of one video can be in "
                "train and in val/test; label frames from more videos for an honest score")
    split = FrameSplit(parts, note)
    if train_frames is not None:
        split["train"] = _subsample(split["train"], train_frames, seed, where)
    return split


def _check_probs(train_prob, val_prob, where) -> None:
    for key, value in (("train_prob", train_prob), ("val_prob", val_prob)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError.at(f"{where}.{key}", f"{key} must be a number", got=value)
    if not 0.0 < train_prob <= 1.0:
        raise ConfigError.at(f"{where}.train_prob", "train_prob must be in (0, 1]", got=train_prob,
                             fix="e.g. train_prob = 0.8")
    if not 0.0 <= val_prob < 1.0:
        raise ConfigError.at(f"{where}.val_prob", "val_prob must be in [0, 1)", got=val_prob,
                             fix="e.g. val_prob = 0.1")
    if train_prob + val_prob > 1.0 + 1e-9:
        raise ConfigError.at(f"{where}.train_prob", "train_prob + val_prob must be at most 1 "
                             "(the rest is the test set)", got=(train_prob, val_prob),
                             fix="lower one of them, e.g. train_prob = 0.8, val_prob = 0.1")


def _targets(n: int, train_prob: float, val_prob: float) -> dict[str, int]:
    """Frame counts per split: rounded, train >= 1, val >= 1 when val_prob > 0 and frames allow."""
    n_train = min(n, max(1, int(round(train_prob * n))))
    n_val = int(round(val_prob * n))
    if val_prob > 0 and n_val == 0 and n - n_train >= 1:
        n_val = 1
    n_val = min(n_val, n - n_train)
    test_prob = 1.0 - train_prob - val_prob
    n_test = n - n_train - n_val
    if test_prob > 1e-9 and n_test == 0 and n_train > 1 and n >= 3:
        n_train -= 1  # a requested test set gets at least one frame
        n_test = 1
    if test_prob <= 1e-9 and n_test > 0:  # rounding leftovers go to train when no test is asked
        n_train += n_test
        n_test = 0
    return {"train": n_train, "val": n_val, "test": n_test}


def _split_single(n: int, targets: dict[str, int], rng) -> dict[str, np.ndarray]:
    order = rng.permutation(n)
    a, b = targets["train"], targets["train"] + targets["val"]
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def _split_groups(groups, names, targets, rng) -> dict[str, np.ndarray]:
    """Whole groups in a seeded order; a group goes where the middle of its frames falls."""
    members = {g: [] for g in names}
    for i, g in enumerate(groups):
        members[g].append(i)
    order = [names[i] for i in rng.permutation(len(names))]
    bounds = (targets["train"], targets["train"] + targets["val"])
    assign: dict[str, list[str]] = {k: [] for k in SPLITS}
    start = 0
    for g in order:
        middle = start + len(members[g]) / 2
        key = "train" if middle < bounds[0] else "val" if middle < bounds[1] else "test"
        assign[key].append(g)
        start += len(members[g])
    for key in SPLITS:  # a split that should hold frames gets the smallest group of the richest one
        if targets[key] > 0 and not assign[key]:
            donor = max((k for k in SPLITS if len(assign[k]) > 1), key=lambda k: len(assign[k]))
            smallest = min(assign[donor], key=lambda g: (len(members[g]), order.index(g)))
            assign[donor].remove(smallest)
            assign[key].append(smallest)
    return {k: [i for g in assign[k] for i in members[g]] for k in SPLITS}


def _subsample(train: np.ndarray, train_frames, seed: int, where: str) -> np.ndarray:
    key = f"{where}.train_frames"
    value = train_frames
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError.at(key, "train_frames must be a fraction in (0, 1] or a frame count",
                             got=value)
    if isinstance(value, (float, np.floating)) or value == 1:
        if not 0.0 < value <= 1.0:
            raise ConfigError.at(key, "a float train_frames is a fraction and must be in (0, 1]",
                                 got=value, fix="use an int for a number of frames")
        count = max(1, int(round(float(value) * len(train))))
    else:
        count = int(value)
        if count < 1:
            raise ConfigError.at(key, "train_frames must be at least 1", got=value)
        if count > len(train):
            raise ConfigError.at(key, f"train_frames asks for more frames than the {len(train)} "
                                 "in the train split", got=value,
                                 fix=f"use at most {len(train)}, or raise train_prob")
    if count >= len(train):
        return train
    rng = np.random.default_rng([int(seed), 1])
    return np.sort(rng.permutation(train)[:count]).astype(np.int64)


# ------------------------------------------------------------------------------- files

def write_split(path, split: dict, labels) -> Path:
    """Write one row per labeled frame: frame, split (or 'unused'), image, video, video_frame."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    where_of = {}
    for key in SPLITS:
        for i in np.asarray(split.get(key, ()), dtype=np.int64):
            where_of[int(i)] = key
    videos = labels.video_paths or [""] * labels.num_frames
    fidx = labels.frame_indices
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_COLUMNS)
        for i in range(labels.num_frames):
            vf = "" if fidx is None or not videos[i] else int(fidx[i])
            writer.writerow([i, where_of.get(i, _UNUSED), labels.image_paths[i], videos[i], vf])
    return path


def read_split(path, labels=None) -> FrameSplit:
    """Read a file written by ``write_split``; with ``labels``, check it describes those frames."""
    where = str(path)
    if not os.path.isfile(where):
        raise DataError.at(where, "split file not found", fix="check the run folder")
    with open(where, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(rows[0]) != _COLUMNS:
        raise DataError.at(where, "not a split file (unexpected header)", got=rows[0] if rows else [],
                           fix=f"the header is {','.join(_COLUMNS)}")
    parts: dict[str, list[int]] = {k: [] for k in SPLITS}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(_COLUMNS) or not row[0].isdigit() or row[1] not in SPLITS + (_UNUSED,):
            raise DataError.at(f"{where}: line {line}", "malformed row", got=row,
                               fix=f"split is one of {', '.join(SPLITS + (_UNUSED,))}")
        if labels is not None:
            _check_row(where, line, row, labels)
        if row[1] in parts:
            parts[row[1]].append(int(row[0]))
    if labels is not None and len(rows) - 1 != labels.num_frames:
        raise DataError.at(where, f"the split lists {len(rows) - 1} frames but the labels have "
                           f"{labels.num_frames}", fix="delete the split file to split again")
    return FrameSplit(parts)


def _check_row(where, line, row, labels) -> None:
    i = int(row[0])
    videos = labels.video_paths or [""] * labels.num_frames
    if i >= labels.num_frames or row[2] != labels.image_paths[i] or row[3] != videos[i]:
        raise DataError.at(f"{where}: line {line}", "the split file was written for other labels",
                           got=row, fix="delete the split file to split again, or use the labels "
                           "it was made from")
