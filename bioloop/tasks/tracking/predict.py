"""``bioloop predict`` for tracking: detections in, track ids out (.slp, CTC result folder or MOT txt).

Inputs: a SLEAP .slp (its video, or ``video=``), a CTC folder (dataset root, ``01``, ``01_GT/TRA``
or a segmentation result with res_track.txt), a MOT txt (+ ``video=``: its images), a TrackMate
CSV, or a video file with ``detections=`` (.slp). Any track ids in the input are ignored.

Each sequence is tracked in frame order in chunks of ``clip_length`` frames (the crop settings of
``dataset.test_dataset``, else ``train_dataset``); ``runner.persistent_tracking.test`` keeps the
tracks across chunks. The crops of a chunk are encoded in batches of ``batch_size`` instances
(default 64) while the next chunk's frames are read on a background thread; the Tracker caches
each instance's features, so every crop is encoded exactly once. Frames are turned into the
channels the model takes (grey replicated to RGB, RGB averaged to grey).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import attrs
import numpy as np
import torch
from tqdm.auto import tqdm

from bioloop.engine.progress import progress_enabled
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.task import (build_tracker, detect_format, inference_settings, model_score_fn,
                                         read_labels_file)
from bioloop.tasks.tracking.types import Instances, TrackSequence

__all__ = ["FORMATS", "predict_tracking", "read_input", "track_sequence"]

FORMATS = ("slp", "ctc", "mot")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
DEFAULT_BATCH = 64


def read_input(path: str, video: str | None = None, detections: str | None = None) -> tuple[list[TrackSequence], str]:
    """(sequences, the input's format: 'slp', 'ctc', 'mot' or 'trackmate')."""
    path = os.fspath(path)
    if path.lower().endswith(VIDEO_SUFFIXES):
        if not detections:
            raise ConfigError.at(path, "a video needs its detections", fix="pass --detections DETECTIONS.slp")
        return read_labels_file(os.fspath(detections), path, "slp", where=os.fspath(detections)), "slp"
    if detections:
        raise ConfigError.at(os.fspath(detections), "--detections goes with a video --input", got=path,
                             fix="give the video as --input, or drop --detections")
    if not os.path.exists(path):
        raise DataError.at(path, "input not found", fix="check the path")
    fmt = detect_format(path)
    return read_labels_file(path, video, fmt, where=path), fmt


def _clips(n: int, length: int) -> list[tuple[int, int, int]]:
    return [(0, s, min(s + length, n)) for s in range(0, n, length)]


def _prefetch(items, depth: int = 2):
    from bioloop.data.prefetch import prefetch

    return prefetch(items, depth)


def encode(model, crops: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Features of every crop, ``batch_size`` crops per forward."""
    if not len(crops):
        return model.encode_crops(crops.to(device))
    return torch.cat([model.encode_crops(crops[i:i + batch_size].to(device, non_blocking=True))
                      for i in range(0, len(crops), batch_size)])


def track_sequence(model, seq: TrackSequence, cfg, *, settings=None, persistent: bool | None = None,
                   batch_size: int = DEFAULT_BATCH, score_fn=None, bar=None, tracker=None,
                   with_scores: bool = False):
    """Predicted track ids of every frame of ``seq`` (-1: not tracked, e.g. frames over max_objects).

    ``score_fn(window, image_hw)`` replaces the model's association logits (tests, ablations).
    ``tracker``: the Tracker to use (default: one from ``cfg.tracker``; read its ``unassigned``
    afterwards). ``with_scores``: ``(ids, association scores)`` per frame (0 where not tracked)."""
    from bioloop.tasks.tracking.data import TrackingClips

    settings = settings or inference_settings(cfg)
    persistent = bool(cfg.runner.persistent_tracking.test) if persistent is None else persistent
    anchors = 1 if isinstance(settings.anchors, str) else len(settings.anchors)
    per_anchor = cfg.gtr.encoder_cfg.in_chans // anchors
    dataset = TrackingClips([seq], _clips(len(seq), settings.clip_length), settings, train=False,
                            channels=per_anchor if per_anchor in (1, 3) else None, where="dataset.test_dataset")
    tracker = build_tracker(cfg, persistent) if tracker is None else tracker
    device = next(model.parameters()).device
    ids = [np.full(len(f), -1, np.int64) for f in seq.frames]
    scores = [np.zeros(len(f)) for f in seq.frames]
    with torch.no_grad():
        for item in _prefetch(dataset[i] for i in range(len(dataset))):
            feats = encode(model, item["crops"], batch_size, device)
            frames = item["frames"].numpy()
            stop = min(item["start"] + settings.clip_length, len(seq))
            order, starts = np.unique(frames, return_index=True)
            bounds = dict(zip(order.tolist(), zip(starts.tolist(), np.r_[starts[1:], len(frames)].tolist())))
            todo = [(seq.frames[t], feats[a:b]) for t, (a, b) in bounds.items() if b - a == len(seq.frames[t])]
            hw = item["image_hw"]
            fn = model_score_fn(model, hw) if score_fn is None else (lambda w, hw=hw: score_fn(w, hw))
            for (inst, _), got, sc in zip(todo, *tracker.track(todo, fn, with_scores=True)):
                ids[inst.frame], scores[inst.frame] = got, sc
            if bar is not None:
                bar.update(stop - item["start"])
    return (ids, scores) if with_scores else ids


def _video_paths(path: str, seqs: list[TrackSequence], video: str | None) -> list[str]:
    """The video each output sequence points at: the file its frames were read from (after a --video
    remap or the same-name file next to the .slp), else the path the input stores."""
    import sleap_io as sio

    stored = [str(v.filename) for v in sio.load_slp(path, open_videos=False).videos]
    return [s.video or f for s, f in zip(seqs, stored)]


def _check_output(output: Path, overwrite: bool) -> None:
    busy = output.exists() and (not output.is_dir() or any(output.iterdir()))
    if busy and not overwrite:
        raise DataError.at(str(output), "already exists", fix="pass --overwrite to replace it")


def predict_tracking(cfg, model, *, extras=None, input=None, output=None, video=None, detections=None,
                     format=None, batch_size=None, overwrite=False, show_progress=True, score_fn=None,
                     **_options) -> Path:
    """Track every sequence of ``input`` and write ``output`` (see the module docstring)."""
    if not input or not output:
        raise ConfigError.at("predict", "needs an input and an output", got=(input, output),
                             fix="pass --input and --output")
    seqs, fmt = read_input(input, video, detections)
    fmt_out = format or {"slp": "slp", "ctc": "ctc"}.get(fmt, "mot")
    if fmt_out not in FORMATS:
        raise ConfigError.at("predict --format", "unknown output format", got=fmt_out, fix="use slp, ctc or mot")
    if fmt_out == "ctc" and fmt != "ctc":
        raise ConfigError.at("predict --format", "CTC results need label masks, which only a CTC input has",
                             got=fmt, fix="use --format slp or mot, or give a CTC folder as --input")
    if fmt_out == "slp" and fmt != "slp" and not video:
        raise ConfigError.at("predict --format", "a .slp output needs the video", got=fmt,
                             fix="pass --video, or use --format mot")
    if fmt_out in ("ctc", "mot") and len(seqs) != 1:
        raise DataError.at(str(input), f"a {fmt_out} output holds one sequence", got=len(seqs),
                           fix="use --format slp, or split the input per video")
    out = Path(output)
    _check_output(out, overwrite)
    model = getattr(model, "module", model).eval()
    total = sum(len(s) for s in seqs)
    tracked, untracked = [], 0
    with tqdm(total=total, desc="tracking", unit="frame", disable=not progress_enabled(not show_progress)) as bar:
        for seq in seqs:
            tracker = build_tracker(cfg, bool(cfg.runner.persistent_tracking.test))
            ids, scores = track_sequence(model, seq, cfg, batch_size=batch_size or DEFAULT_BATCH,
                                         score_fn=score_fn, bar=bar, tracker=tracker, with_scores=True)
            frames = [Instances(f.frame, f.points, f.boxes, k, scores=f.scores, mask_ids=f.mask_ids, z=f.z,
                                track_scores=sc) for f, k, sc in zip(seq.frames, ids, scores)]
            tracked.append(attrs.evolve(seq, frames=frames))
            untracked += sum(int((k < 0).sum()) for k in ids)
    n_inst = sum(len(f) for s in seqs for f in s.frames)
    if untracked:
        lost = " and are not in the MOT file" if fmt_out == "mot" else ""
        print(f"tracking: {untracked} of {n_inst} instances were left without a track{lost} (tracker "
              f"max_tracks={cfg.tracker.max_tracks}, max_center_dist={cfg.tracker.max_center_dist}; frames over "
              f"max_objects are not tracked)", file=sys.stderr, flush=True)
    meta = {"bioloop_instances": n_inst, "bioloop_untracked_instances": untracked,
            "bioloop_checkpoint": str((extras or {}).get("checkpoint", ""))}
    return _write(out, fmt_out, tracked, input=str(input), video=video, provenance=meta)


def _write(out: Path, fmt: str, seqs: list[TrackSequence], *, input: str, video: str | None,
           provenance: dict | None = None) -> Path:
    from bioloop.tasks.tracking import io

    if fmt == "slp":
        if not out.name.endswith(".slp"):
            raise ConfigError.at(str(out), "a .slp output needs the .slp ending", fix="e.g. --output tracked.slp")
        vids = _video_paths(input, seqs, video) if input.lower().endswith(".slp") else [video or input] * len(seqs)
        return io.write_slp(out, seqs, vids, provenance=provenance)
    if fmt == "mot":
        return io.write_mot(out, seqs[0])
    io.write_ctc(out, seqs[0])
    problems = io.check_ctc(out)
    if problems:
        raise DataError.at(str(out), "the CTC result fails the consistency checks", got=problems[:5],
                           fix="please report this: bioloop should only write valid CTC results")
    return out
