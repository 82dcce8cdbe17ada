"""Predict keypoints on a video or a folder of images; write a DLC-style CSV (and an .slp, an overlay mp4).

The CSV has x, y, likelihood per keypoint in frame pixels (read it with pandas
``header=[0, 1, 2], index_col=0``); the likelihood is the decoder's confidence in [0, 1].
Frames are decoded, resized to the network size and normalised on a background thread (two
batches ahead), so the model does not wait for decoding; predictions are mapped back exactly.
Temporal context models (``heatmap_mhcrnn``) get windows t-2..t+2: neighbouring video frames
(edges replicated) or neighbouring numbered image files (``data.context_paths``).
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bioloop.data.prefetch import prefetch  # re-exported: the reader every prediction shares
from bioloop.engine.progress import progress_enabled
from bioloop.errors import DataError

__all__ = ["VIDEO_SUFFIXES", "IMAGE_SUFFIXES", "CONTEXT", "combine_context_heatmaps", "is_context_model",
           "prefetch", "write_predictions_slp", "predict_pose"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CONTEXT = 2  # heatmap_mhcrnn sees frames t-2..t+2


def combine_context_heatmaps(out: dict, *, logits: bool = False, sigma: float = 1.25) -> dict:
    """``{"heatmaps": ...}`` from a context model's output: per keypoint the more confident of the
    static (``heatmaps_sf``) and context (``heatmaps_mf``) maps (``logits``/``sigma`` as in
    ``heatmaps.heatmap_confidence``); other outputs pass through."""
    if "heatmaps_sf" not in out:
        return out
    from bioloop.tasks.pose.models import select_more_confident

    return {"heatmaps": select_more_confident(out["heatmaps_sf"], out["heatmaps_mf"], logits=logits, sigma=sigma)}


def is_context_model(model, extras: dict | None = None) -> bool:
    """Whether ``model`` takes context windows (a HeatmapMHCRNN, or a checkpoint of one)."""
    from bioloop.tasks.pose.models import HeatmapMHCRNN

    net = getattr(model, "module", model)  # DistributedDataParallel
    return isinstance(net, HeatmapMHCRNN) or (extras or {}).get("model_type") == "heatmap_mhcrnn"


def _read_image(path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError.at(str(path), "cannot read this image", fix="check the file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _image_batches(paths, batch_size: int, dims, context: int) -> Iterator[tuple[np.ndarray, list, np.ndarray]]:
    """(indices, original sizes, uint8 frames (B, H, W, 3) or windows (B, 2c+1, H, W, 3)) resized to dims."""
    from bioloop.tasks.pose.data import context_paths, resize_image

    present = {str(p) for p in paths}
    cache: OrderedDict[str, tuple[np.ndarray, tuple]] = OrderedDict()  # neighbours are read once

    def load(path: str):
        if path not in cache:
            image = _read_image(path)
            cache[path] = (resize_image(image, dims), image.shape[:2])
            while len(cache) > batch_size + 4 * context + 2:
                cache.popitem(last=False)
        return cache[path]

    for first in range(0, len(paths), batch_size):
        chunk = [str(p) for p in paths[first:first + batch_size]]
        frames, sizes = [], []
        for path in chunk:
            centre, hw = load(path)
            if context:
                window = context_paths(path, context, exists=lambda p: p in present or os.path.isfile(p))
                frames.append(np.stack([load(p)[0] for p in window]))
            else:
                frames.append(centre)
            sizes.append(hw)
        yield np.arange(first, first + len(chunk)), sizes, np.stack(frames)


def _video_batches(path, batch_size: int, dims, context: int, hw) -> Iterator[tuple[np.ndarray, list, np.ndarray]]:
    """Like ``_image_batches`` for a video whose frames are ``hw``; every frame is decoded and resized once."""
    from bioloop.tasks.pose.video import iter_batches, iter_context_batches

    if context:
        batches = iter_context_batches(path, batch_size, context, resize_hw=dims)
    else:
        batches = iter_batches(path, batch_size, resize_hw=dims)
    for index, frames in batches:
        yield index, [tuple(hw)] * len(index), frames


def _video_sequences(path, batch_size: int, dims, context: int, hw) -> Iterator[tuple[np.ndarray, list, np.ndarray]]:
    """Consecutive frames for ``forward_sequence``: ``(centre indices (B,), sizes, frames (B + 2c, H, W, 3))``.

    Frames ``t0 - c .. t1 - 1 + c`` of the batch's centres ``t0 .. t1 - 1``, first and last frames
    repeated at the edges (the same windows as ``iter_context_batches``); each frame is decoded once.
    """
    from bioloop.tasks.pose.video import iter_batches

    history, pending, start = None, None, 0
    for _, frames in iter_batches(path, batch_size, resize_hw=dims):
        if history is None:
            history, pending = np.repeat(frames[:1], context, axis=0), frames[:0]
        pending = np.concatenate([pending, frames])
        while len(pending) - context >= batch_size:  # enough look-ahead for a full batch
            yield np.arange(start, start + batch_size), [tuple(hw)] * batch_size, \
                np.concatenate([history, pending[:batch_size + context]])
            history = np.concatenate([history, pending[:batch_size]])[len(history) + batch_size - context:]
            pending, start = pending[batch_size:], start + batch_size
    if pending is None:
        return
    pending = np.concatenate([pending, np.repeat(pending[-1:], context, axis=0)])
    while len(pending) > context:
        n = min(batch_size, len(pending) - context)
        yield np.arange(start, start + n), [tuple(hw)] * n, np.concatenate([history, pending[:n + context]])
        history = np.concatenate([history, pending[:n]])[len(history) + n - context:]
        pending, start = pending[n:], start + n


def _prepared(batches) -> Iterator[tuple[np.ndarray, list, torch.Tensor]]:
    from bioloop.tasks.pose.data import normalize_frames

    for index, sizes, frames in batches:
        yield index, sizes, torch.from_numpy(normalize_frames(frames))


def write_predictions_slp(path, keypoints, confidence, keypoint_names, *, video=None, image_paths=None,
                          frame_indices=None, frame_shape=None, fps: float | None = None) -> Path:
    """Write predictions (N, K, 2) frame pixels with confidences (N, K) as a SLEAP .slp file.

    One PredictedInstance per frame, or with (N, A, K, 2) / (N, A, K) one per animal that is not
    all NaN (top-down: per detection). Point scores are the confidences, the instance score their
    mean. The frames belong to ``video`` (a video file; frame ``frame_indices[i]``, default ``i``)
    or, for an image folder, to a SLEAP image-list video of ``image_paths``. ``frame_shape`` is
    (H, W) of the frames, ``fps`` their rate. ``labels.read_slp(path, include_predicted=True)`` reads it back.
    """
    import sleap_io as sio

    kp = np.asarray(keypoints, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    names = [str(n) for n in keypoint_names]
    skeleton = sio.Skeleton(nodes=names, name="bioloop")
    n = len(kp)
    shape = None if frame_shape is None else [n, int(frame_shape[0]), int(frame_shape[1]), 3]
    meta = {"shape": shape, "grayscale": False, "fps": fps}
    if image_paths is not None:  # SLEAP's ImageVideo, written without opening the images
        files = [os.path.abspath(str(p)) for p in image_paths]
        meta.update(type="ImageVideo", filename=files[0], filenames=files, channels_=3,
                    height_=None if shape is None else shape[1], width_=None if shape is None else shape[2])
        source = sio.Video(filename=files, open_backend=False, backend_metadata=meta)
        frames = np.arange(n)
    else:
        name = os.path.abspath(str(video))
        meta.update(type="MediaVideo", filename=name, bgr=True, dataset="", input_format="")
        source = sio.Video(filename=name, open_backend=False, backend_metadata=meta)
        frames = np.arange(n) if frame_indices is None else np.asarray(frame_indices, dtype=np.int64)
    labeled = []
    for t, xy, score in zip(frames, kp, conf):
        if xy.ndim == 2:
            animals = [(xy, score)]
        else:  # several animals: one instance per detected (not all-NaN) animal
            animals = [(a, s) for a, s in zip(xy, score) if np.isfinite(a).any()]
        instances = []
        for a, s in animals:
            mean = float(np.nanmean(s)) if np.isfinite(s).any() else 0.0
            instances.append(sio.PredictedInstance.from_numpy(a, skeleton=skeleton, point_scores=s, score=mean))
        labeled.append(sio.LabeledFrame(video=source, frame_idx=int(t), instances=instances))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sio.save_slp(sio.Labels(labeled_frames=labeled, videos=[source], skeletons=[skeleton]), str(out),
                 verbose=False)
    return out


def _check_free(path: Path, overwrite: bool, option: str) -> None:
    if path.exists() and not overwrite:
        raise DataError.at(str(path), "output already exists", fix=f"choose another {option} or pass --overwrite")


def _open_source(source: Path) -> tuple[list | None, int, tuple | None, float | None]:
    """(image paths or None for a video, frame count, video frame (H, W), video fps)."""
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        from bioloop.tasks.pose.video import VideoReader

        with VideoReader(source) as reader:
            return None, len(reader), reader.hw, reader.fps or None
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError.at(str(source), "no images in this folder", fix=f"expected {', '.join(IMAGE_SUFFIXES)}")
        return paths, len(paths), None, None
    raise DataError.at(str(source), "expected a video file or a folder of images",
                       fix=f"videos: {', '.join(VIDEO_SUFFIXES)}")


def predict_pose(cfg, model, task, *, extras, input, output, batch_size=None, save_video=None, overwrite=False,
                 device=None, show_progress=True, slp_output=None, written: list | None = None) -> Path:
    """Predict ``input`` (a video file or an image folder) into the CSV ``output``; returns its path.

    ``slp_output`` also writes the predictions as a SLEAP .slp file; ``save_video`` (default
    ``eval.save_vids_after_training``) an overlay mp4 next to the CSV (videos only). Top-down
    configs (``method = "td"``) detect the animals first and write every one (``_predict_topdown``).
    Image rows are indexed by the image path relative to ``data_dir`` (``labeled-data/...``, as
    Lightning Pose and DeepLabCut write them). Every file written is appended to ``written``.
    """
    from bioloop.tasks.pose.data import unresize_keypoints

    source, out = Path(input), Path(output)
    _check_free(out, overwrite, "--output")
    slp = None if slp_output is None else Path(slp_output)
    if slp is not None:
        _check_free(slp, overwrite, "slp output")
    names = list(extras.get("keypoint_names") or cfg.keypoint_names or [])
    dims = tuple(extras.get("image_resize_dims") or (cfg.image_resize_dims.height, cfg.image_resize_dims.width))
    context = CONTEXT if is_context_model(model, extras) else 0
    batch_size = batch_size or (cfg.dali.context_predict_sequence_length if context
                                else cfg.dali.base_predict_sequence_length)
    paths, total, frame_hw, fps = _open_source(source)
    device = device or next(model.parameters()).device
    model.eval()
    if getattr(cfg, "method", "bu") == "td":
        kp, conf, sizes_all = _predict_topdown(cfg, model, task, source, paths, total, batch_size, device,
                                               len(names), show_progress)
    else:
        core = getattr(model, "module", model)
        sequence = paths is None and context and hasattr(core, "forward_sequence")
        if sequence:  # the backbone runs once per frame, not once per window position
            batches = _video_sequences(source, batch_size, dims, context, frame_hw)
        elif paths is None:
            batches = _video_batches(source, batch_size, dims, context, frame_hw)
        else:
            batches = _image_batches(paths, batch_size, dims, context)
        keypoints, confidence, sizes_all = [], [], []
        bar = tqdm(total=total, desc="predict", unit="frame", disable=not progress_enabled(not show_progress))
        with torch.inference_mode():
            for _, sizes, tensor in prefetch(_prepared(batches), depth=2):
                tensor = tensor.to(device, non_blocking=True)
                out_maps = core.forward_sequence(tensor) if sequence else model(tensor)
                xy, c = task.decode(model, out_maps)  # a context model keeps its more confident map
                for p, hw in zip(xy.cpu().numpy(), sizes):
                    keypoints.append(unresize_keypoints(p, hw, dims))
                confidence.append(c.cpu().numpy())
                sizes_all.extend(sizes)
                bar.update(len(sizes))
        bar.close()
        kp, conf = np.stack(keypoints), np.concatenate(confidence)
    files = _write_outputs(cfg, source, out, slp, kp, conf, names, paths, sizes_all, frame_hw, fps, save_video,
                           show_progress)
    if written is not None:
        written.extend(files)
    return out


def _predict_topdown(cfg, model, task, source, paths, total, batch_size, device, num_keypoints,
                     show_progress) -> tuple[np.ndarray, np.ndarray, list]:
    """(N, A, K, 2) keypoints, (N, A, K) confidences (NaN past a frame's animals), frame sizes."""
    from bioloop.tasks.pose.td_task import load_config_detector, pack_animals, predict_frames

    detector = load_config_detector(cfg, device)
    if paths is None:
        from bioloop.tasks.pose.video import iter_batches

        batches = ((index, list(frames)) for index, frames in iter_batches(source, batch_size))
    else:
        batches = ((np.arange(i, i + batch_size), [_read_image(p) for p in paths[i:i + batch_size]])
                   for i in range(0, len(paths), batch_size))
    found, sizes = [], []
    bar = tqdm(total=total, desc="predict", unit="frame", disable=not progress_enabled(not show_progress))
    for _, frames in prefetch(batches, depth=2):
        found.extend(predict_frames(cfg, detector, model, task, frames, device, num_keypoints))
        sizes.extend(f.shape[:2] for f in frames)
        bar.update(len(frames))
    bar.close()
    kp, conf = pack_animals(found, num_keypoints, cfg.detector.max_animals)
    return kp, conf, sizes


def _write_outputs(cfg, source, out, slp, kp, conf, names, paths, sizes_all, frame_hw, fps, save_video,
                   show_progress) -> list[Path]:
    """The CSV (one or several animals), the optional .slp and the optional overlay video; their paths."""
    from bioloop.tasks.pose.labels import write_dlc_csv

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = {"image_paths": [str(p) for p in paths]} if paths is not None else {"frame_indices": np.arange(len(kp))}
    write_dlc_csv(out, kp, likelihood=conf, keypoint_names=names, root=getattr(cfg, "data_dir", None), **rows)
    files = [out]
    if slp is not None:
        same = len(set(map(tuple, sizes_all))) == 1
        write_predictions_slp(slp, kp, conf, names, video=None if paths else source, image_paths=paths,
                              frame_shape=frame_hw or (tuple(sizes_all[0]) if same else None), fps=fps)
        files.append(slp)
    want_video = cfg.eval.save_vids_after_training if save_video is None else save_video
    if want_video and paths is None:
        from bioloop.tasks.pose.overlay import write_overlay_video

        multi = kp.ndim == 4  # every animal drawn: (T, A * K, 2)
        files.append(write_overlay_video(source, kp.reshape(len(kp), -1, 2), conf.reshape(len(kp), -1),
                                         out.with_suffix(".labeled.mp4"), colormap=cfg.eval.colormap,
                                         confidence_thresh=cfg.eval.confidence_thresh_for_vid,
                                         show_progress=show_progress, names=None if multi else names))
    elif want_video and save_video:
        print(f"predict: no overlay video for {source}: overlays are drawn on videos, not image folders",
              file=sys.stderr)
    return files
