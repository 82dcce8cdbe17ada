"""Tracking data formats: readers to ``TrackSequence`` and writers of tracked results, in one place.

Readers (frames are read lazily through ``sequence.read_frame(t)``):

- ``read_slp(slp_path, video_path=None, *, where)`` -> list[TrackSequence]    SLEAP .slp + video
- ``read_ctc(folder, *, gt=True, sequence=None, where)`` -> (TrackSequence, L B E P table)
- ``read_mot(txt_path, images=None, *, where)`` -> TrackSequence                MOTChallenge txt
- ``read_trackmate(csv_path, images=None, *, radius, pixel_size, where)`` -> TrackSequence
- ``find_pairs(dir_path, labels_suffix, vid_suffix, *, where)`` -> [(labels, video)]  the ``dir`` section

Writers: ``write_slp``, ``write_ctc`` (+ ``check_ctc``), ``write_mot``.
"""

from __future__ import annotations

import os

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.io_ctc import check_ctc, instances_from_labels, read_ctc, read_ctc_tracks, write_ctc
from bioloop.tasks.tracking.io_mot import read_mot, read_trackmate, write_mot
from bioloop.tasks.tracking.io_slp import read_slp, write_slp

__all__ = ["check_ctc", "find_pairs", "instances_from_labels", "read_ctc", "read_ctc_tracks", "read_mot",
           "read_slp", "read_trackmate", "write_ctc", "write_mot", "write_slp"]


def find_pairs(dir_path, labels_suffix: str, vid_suffix: str, *, where: str = "dir") -> list[tuple[str, str]]:
    """Pair label files and videos of one folder by stem (``a.slp`` + ``a.mp4``), sorted by stem.

    A stem is the file name without the suffix, so ``labels_suffix='.predictions.slp'`` pairs
    ``a.predictions.slp`` with ``a.mp4``. Every file with either suffix must have a partner."""
    path = os.fspath(dir_path)
    for key, suffix in (("labels_suffix", labels_suffix), ("vid_suffix", vid_suffix)):
        if not isinstance(suffix, str) or not suffix:
            raise ConfigError.at(f"{where}.{key}", "must be a non-empty file suffix", got=suffix,
                                 fix="e.g. labels_suffix='.slp', vid_suffix='.mp4'")
    if labels_suffix == vid_suffix:
        raise ConfigError.at(f"{where}.vid_suffix", "labels and videos need different suffixes",
                             got=vid_suffix, fix="e.g. labels_suffix='.slp', vid_suffix='.mp4'")
    if not os.path.isdir(path):
        raise DataError.at(f"{where}.path", "folder not found", got=path, fix="check the path")
    names = sorted(os.listdir(path))
    # the longer suffix first, so '.pkg.slp' is not also taken as '.slp'
    order = sorted([("labels", labels_suffix), ("videos", vid_suffix)], key=lambda kv: -len(kv[1]))
    found: dict[str, dict[str, str]] = {"labels": {}, "videos": {}}
    for name in names:
        for kind, suffix in order:
            if name.endswith(suffix) and len(name) > len(suffix):
                found[kind][name[: -len(suffix)]] = os.path.join(path, name)
                break
    labels, videos = found["labels"], found["videos"]
    if not labels and not videos:
        raise DataError.at(f"{where}.path", f"no '*{labels_suffix}' or '*{vid_suffix}' files in {path}",
                           got=names[:10], fix="check the path and the suffixes")
    lonely = sorted(os.path.basename(p) for s, p in labels.items() if s not in videos)
    lonely += sorted(os.path.basename(p) for s, p in videos.items() if s not in labels)
    if lonely:
        raise DataError.at(f"{where}.path", f"files without a partner in {path}", got=lonely,
                           fix=f"each '<name>{labels_suffix}' needs '<name>{vid_suffix}' (and back)")
    return [(labels[s], videos[s]) for s in sorted(labels)]
