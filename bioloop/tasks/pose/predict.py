"""Predict keypoints on a video or a folder of images; write a DLC-style CSV (and an overlay mp4).

The CSV has x, y, likelihood per keypoint in frame pixels (read it with pandas
``header=[0, 1, 2], index_col=0``); the likelihood is the decoder's confidence in [0, 1].
Frames are resized to the network size in batches and predictions mapped back exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bioloop.engine.progress import progress_enabled
from bioloop.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _batches_of_images(paths, batch_size):
    import cv2

    for first in range(0, len(paths), batch_size):
        chunk = paths[first:first + batch_size]
        frames = []
        for path in chunk:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise DataError.at(str(path), "cannot read this image", fix="check the file")
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        yield np.arange(first, first + len(chunk)), frames


def predict_pose(cfg, model, task, *, extras, input, output, batch_size=None, save_video=None, overwrite=False,
                 device=None, show_progress=True) -> Path:
    """Predict ``input`` (a video file or an image folder) into the CSV ``output``; returns its path."""
    from bioloop.tasks.pose.data import IMAGENET_MEAN, IMAGENET_STD, resize_image, unresize_keypoints
    from bioloop.tasks.pose.labels import write_dlc_csv

    source, out = Path(input), Path(output)
    if out.exists() and not overwrite:
        raise DataError.at(str(out), "output already exists", fix="choose another --output or pass --overwrite")
    names = list(extras.get("keypoint_names") or cfg.keypoint_names or [])
    dims = tuple(extras.get("image_resize_dims") or (cfg.image_resize_dims.height, cfg.image_resize_dims.width))
    batch_size = batch_size or cfg.dali.base_predict_sequence_length
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        from bioloop.tasks.pose.video import VideoReader, iter_batches

        with VideoReader(source) as reader:
            total, orig_hw = len(reader), reader.hw
        batches = ((idx, list(frames)) for idx, frames in iter_batches(source, batch_size))
        paths = None
    elif source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError.at(str(source), "no images in this folder", fix=f"expected {', '.join(IMAGE_SUFFIXES)}")
        total, orig_hw = len(paths), None
        batches = _batches_of_images(paths, batch_size)
    else:
        raise DataError.at(str(source), "expected a video file or a folder of images",
                           fix=f"videos: {', '.join(VIDEO_SUFFIXES)}")
    device = device or next(model.parameters()).device
    model.eval()
    keypoints, confidence = [], []
    bar = tqdm(total=total, desc="predict", unit="frame", disable=not progress_enabled(not show_progress))
    with torch.inference_mode():
        for _, frames in batches:
            sizes = [f.shape[:2] for f in frames]
            x = np.stack([resize_image(f, dims) for f in frames]).astype(np.float32) / 255.0
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
            tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
            xy, conf = task.decode(model, model(tensor))
            for p, hw in zip(xy.cpu().numpy(), sizes):
                keypoints.append(unresize_keypoints(p, hw, dims))
            confidence.append(conf.cpu().numpy())
            bar.update(len(frames))
    bar.close()
    kp, conf = np.stack(keypoints), np.concatenate(confidence)
    out.parent.mkdir(parents=True, exist_ok=True)
    if paths is not None:
        write_dlc_csv(out, kp, likelihood=conf, keypoint_names=names, image_paths=[str(p) for p in paths])
    else:
        write_dlc_csv(out, kp, likelihood=conf, keypoint_names=names, frame_indices=np.arange(len(kp)))
    want_video = cfg.eval.save_vids_after_training if save_video is None else save_video
    if want_video and paths is None:
        from bioloop.tasks.pose.overlay import write_overlay_video

        write_overlay_video(source, kp, conf, out.with_suffix(".labeled.mp4"), colormap=cfg.eval.colormap,
                            confidence_thresh=cfg.eval.confidence_thresh_for_vid, show_progress=show_progress,
                            names=names)
    del orig_hw
    return out
