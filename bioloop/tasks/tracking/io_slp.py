"""SLEAP .slp files for tracking: read tracked labels (one ``TrackSequence`` per video), write tracked predictions.

Track ids are positions in the file's track list (``labels.tracks``); an instance without a track gets -1.
``write_slp`` writes one ``Track`` per id 0..max id (named ``track_<id>``), so reading back gives the same ids.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.io_frames import (ImageFrames, MissingFrames, SleapVideoFrames, VideoFrames,
                                              video_info)
from bioloop.tasks.tracking.types import Instances, TrackSequence, boxes_from_points

__all__ = ["read_slp", "write_slp"]


def _video_paths(video_path, n_videos: int, where: str) -> list[str | None]:
    """One path per video (writers: ``video_path`` is one path, or a list with one per video)."""
    if video_path is None:
        return [None] * n_videos
    paths = [video_path] if isinstance(video_path, (str, os.PathLike)) else list(video_path)
    if len(paths) != n_videos:
        raise ConfigError.at(where, f"video_path must give one video per video in the .slp ({n_videos})",
                             got=len(paths), fix="pass a list with one path per video, in the file's order")
    return [os.fspath(p) for p in paths]


def _stored_name(filename) -> str:
    return str(filename).replace("\\", "/")


def video_overrides(video_path, stored: Sequence, where: str) -> list[str | None]:
    """The file to read for each video of a .slp (None: the stored path) from a ``--video`` remap.

    ``video_path``: None; one video file (a .slp with one video); a list with one file per video;
    a folder (each video is the file of the same name in it); or ``OLD=NEW`` (stored paths that start
    with OLD start with NEW instead; the others stay).
    """
    if video_path is None:
        return [None] * len(stored)
    if not isinstance(video_path, (str, os.PathLike)):
        return _video_paths(video_path, len(stored), where)
    text = os.fspath(video_path)
    if os.path.isdir(text):
        out = []
        for name in stored:
            cand = os.path.join(text, Path(_stored_name(name)).name)
            if not os.path.isfile(cand):
                raise DataError.at(where, f"the video folder has no {Path(_stored_name(name)).name}", got=text,
                                   fix="put the videos there under the names the .slp stores, or pass one file")
            out.append(cand)
        return out
    if "=" in text and not os.path.exists(text):
        old, new = text.split("=", 1)
        old = old.replace("\\", "/")
        if not old:
            raise ConfigError.at(where, "a video remap needs the old prefix before '='", got=text,
                                 fix="e.g. --video /old/videos=/new/videos")
        return [new + _stored_name(n)[len(old):] if _stored_name(n).startswith(old) else None for n in stored]
    return _video_paths(text, len(stored), where)


_ANNOUNCED: set[tuple[str, str]] = set()


def _resolve(filename: str, base: Path, slp_path: str = "") -> str | None:
    """The stored video path, or the file of the same name next to the .slp when that one is gone
    (said once per .slp and video)."""
    same_name = base / Path(_stored_name(filename)).name
    for cand in (filename, base / filename, same_name):
        if os.path.isfile(cand):
            if cand is same_name and os.path.abspath(same_name) != os.path.abspath(base / filename) \
                    and (slp_path, filename) not in _ANNOUNCED:
                _ANNOUNCED.add((slp_path, filename))
                print(f"{slp_path or base}: video {filename} not found; reading {same_name} (same name, next to "
                      "the .slp; --video remaps the path)", file=sys.stderr, flush=True)
            return os.fspath(cand)
    return None


def _source(video, index: int, override: str | None, slp_path: str, base: Path):
    """(frame source, n_frames or None, (H, W) or None, the video file read or None) for one video."""
    shape = video.backend_metadata.get("shape") if video.backend_metadata else None
    meta_n = int(shape[0]) if shape else None
    meta_hw = (int(shape[1]), int(shape[2])) if shape else None
    filename = override if override is not None else video.filename
    if isinstance(filename, (list, tuple)):  # an image-list video
        paths = [_resolve(f, base, slp_path) or f for f in filename]
        return ImageFrames(paths, where=slp_path), len(paths), meta_hw, None
    if override is None and str(filename).endswith(".slp"):  # frames embedded in the package
        return SleapVideoFrames(slp_path, index), meta_n, meta_hw, None
    path = _resolve(str(filename), base, slp_path) if override is None else override
    if path is None or not os.path.isfile(path):
        return (MissingFrames(slp_path, f"video file not found: {filename}",
                              "pass --video (predict, evaluate, view-batch) or dataset video_files with the "
                              "video's location, a folder holding it, or OLD=NEW"), meta_n, meta_hw, None)
    info = video_info(path)
    if info is None:
        return VideoFrames(path), meta_n, meta_hw, path
    return VideoFrames(path), info[0], info[1], path


def _frame_instances(lf, tracks: dict, n_nodes: int, box_pad: float) -> Instances:
    """User instances when the frame has any, else its predicted ones; all-NaN instances dropped."""
    import sleap_io as sio

    insts = list(lf.user_instances) or list(lf.predicted_instances)
    pts, ids, scores = [], [], []
    for inst in insts:
        xy = np.asarray(inst.numpy(), dtype=np.float64)[:, :2]
        if not np.isfinite(xy).any():
            continue
        pts.append(xy)
        ids.append(tracks.get(id(inst.track), -1) if inst.track is not None else -1)
        scores.append(float(inst.score) if isinstance(inst, sio.PredictedInstance) else 1.0)
    points = np.stack(pts) if pts else np.zeros((0, n_nodes, 2))
    boxes = boxes_from_points(points, pad=box_pad) if pts else np.zeros((0, 4))
    return Instances(frame=int(lf.frame_idx), points=points, boxes=boxes, track_ids=ids,
                     scores=np.asarray(scores, dtype=np.float64))


def read_slp(slp_path, video_path=None, *, where: str | None = None, box_pad: float = 2.0) -> list[TrackSequence]:
    """One ``TrackSequence`` per video of a SLEAP .slp file.

    Points per skeleton node; boxes around each instance's points grown by ``box_pad`` px; track ids
    = index in the file's tracks (-1 without a track); scores = instance score (1 for user
    instances). A frame with user instances uses only those (its predictions are ignored).
    Frames come lazily from the video: ``video_path`` remaps the stored path (``video_overrides``:
    one file, one per video, a folder, or ``OLD=NEW``); a missing stored path is also looked for
    next to the .slp (said once). ``TrackSequence.video`` is the file actually read. The sequence
    covers every frame of the video (frames without labels have no instances).
    """
    import sleap_io as sio

    slp_path = os.fspath(slp_path)
    where = where or slp_path
    if not os.path.isfile(slp_path):
        raise DataError.at(where, "SLEAP file not found", got=slp_path, fix="check the path")
    try:
        labels = sio.load_slp(slp_path, open_videos=False)
    except Exception as exc:  # noqa: BLE001 - h5py/format errors are data problems
        raise DataError.at(where, f"cannot read this .slp file ({exc})", fix="check it opens in SLEAP") from exc
    if len(labels.skeletons) != 1:
        raise DataError.at(where, "expected exactly one skeleton", got=len(labels.skeletons),
                           fix="split the file per skeleton")
    names = list(labels.skeletons[0].node_names)
    tracks = {id(t): i for i, t in enumerate(labels.tracks)}
    overrides = video_overrides(video_path, [v.filename if isinstance(v.filename, str) else "" for v in labels.videos],
                                where)
    base = Path(slp_path).parent
    by_video: dict[int, dict[int, Instances]] = {i: {} for i in range(len(labels.videos))}
    vindex = {id(v): i for i, v in enumerate(labels.videos)}
    for lf in labels.labeled_frames:
        by_video[vindex[id(lf.video)]][int(lf.frame_idx)] = _frame_instances(lf, tracks, len(names), box_pad)
    stem = Path(slp_path).name.removesuffix(".slp")
    out = []
    for i, video in enumerate(labels.videos):
        source, n, hw, read_path = _source(video, i, overrides[i], slp_path, base)
        labeled = by_video[i]
        n = max(n or 0, max(labeled, default=-1) + 1)
        empty = np.zeros((0, len(names), 2))
        frames = [labeled[t] if t in labeled else
                  Instances(frame=t, points=empty, boxes=np.zeros((0, 4)), track_ids=[]) for t in range(n)]
        name = stem if len(labels.videos) == 1 else f"{stem}:{i}"
        out.append(TrackSequence(name=name, frames=frames, read_frame=source, node_names=names,
                                 image_hw=hw, source=slp_path, video=read_path))
    return out


def write_slp(path, sequences: TrackSequence | Sequence[TrackSequence], video_path, *,
              fps: float | None = None, provenance: dict | None = None) -> Path:
    """Write tracked predictions as a SLEAP .slp: one video per sequence (``video_path``: one path, or
    one per sequence), one ``PredictedInstance`` per instance with its points, scores and ``Track``
    ``track_<id>`` (none for -1); ``tracking_score`` is the instance's ``track_scores`` entry (the
    tracker's association score), or empty when the sequence has none. ``provenance`` is stored in
    the file's provenance (SLEAP shows it). ``read_slp`` gives back the same ids and points."""
    import sleap_io as sio

    seqs = [sequences] if isinstance(sequences, TrackSequence) else list(sequences)
    if not seqs:
        raise ConfigError.at(os.fspath(path), "no sequences to write", fix="pass at least one TrackSequence")
    vids = _video_paths(video_path, len(seqs), os.fspath(path))
    names = [str(n) for n in seqs[0].node_names]
    for s in seqs[1:]:
        if [str(n) for n in s.node_names] != names:
            raise DataError.at(s.source or s.name, "sequences disagree on the node names",
                               got=list(s.node_names), fix=f"use the same skeleton ({names})")
    skeleton = sio.Skeleton(nodes=names, name="bioloop")
    max_id = max((int(s.track_ids().max()) for s in seqs if len(s.track_ids())), default=-1)
    tracks = [sio.Track(name=f"track_{k}") for k in range(max_id + 1)]
    videos, labeled = [], []
    for seq, vp in zip(seqs, vids):
        shape = None if seq.image_hw is None else [len(seq), int(seq.image_hw[0]), int(seq.image_hw[1]), 3]
        meta = {"shape": shape, "fps": fps, "type": "MediaVideo", "filename": os.path.abspath(vp),
                "bgr": True, "dataset": "", "input_format": "", "grayscale": False}
        video = sio.Video(filename=os.path.abspath(vp), open_backend=False, backend_metadata=meta)
        videos.append(video)
        for inst in seq.frames:
            if not len(inst):
                continue
            pts = inst.points if inst.points.size else inst.centroids[:, None, :]
            objs = []
            for j in range(len(inst)):
                k = int(inst.track_ids[j])
                n_pts = pts[j].shape[0]
                t_score = None if inst.track_scores is None else float(inst.track_scores[j])
                objs.append(sio.PredictedInstance.from_numpy(
                    pts[j], skeleton=skeleton, point_scores=np.full(n_pts, float(inst.scores[j])),
                    score=float(inst.scores[j]), track=tracks[k] if k >= 0 else None,
                    tracking_score=t_score))
            labeled.append(sio.LabeledFrame(video=video, frame_idx=int(inst.frame), instances=objs))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = sio.Labels(labeled_frames=labeled, videos=videos, skeletons=[skeleton], tracks=tracks,
                        provenance=dict(provenance or {}))
    sio.save_slp(labels, os.fspath(out), verbose=False)
    return out
