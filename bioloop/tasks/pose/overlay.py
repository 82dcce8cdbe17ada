"""Keypoint overlays on frames and videos (the reference's ``eval.colormap`` and
``eval.confidence_thresh_for_vid``).

Keypoint ``k`` of ``K`` gets the colour ``colormap(k / (K - 1))`` of a matplotlib colormap and is
drawn as a filled disk centred on the pixel nearest to its (x, y) (pixel centres at integers),
only when its confidence is ``>= confidence_thresh``; NaN keypoints are never drawn. Optional
skeleton ``edges`` (pairs of names or indices) are drawn in white between drawn keypoints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from bioloop.engine.progress import progress_enabled
from bioloop.data.mp4 import open_mp4_writer
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.pose.video import VideoReader, iter_batches

__all__ = ["keypoint_colours", "render_overlay", "write_overlay_video"]

_EDGE_RGB = (255, 255, 255)


def keypoint_colours(n_keypoints: int, colormap: str = "cool") -> np.ndarray:
    """``(K, 3)`` uint8 RGB colours, keypoint k at ``colormap(k / (K - 1))``."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ConfigError.at("eval.colormap", "unknown matplotlib colormap", got=colormap,
                             fix="use e.g. 'cool', 'viridis', 'plasma', 'RdBu'") from None
    pos = np.linspace(0.0, 1.0, n_keypoints) if n_keypoints > 1 else np.zeros(1)
    return np.round(cmap(pos)[:, :3] * 255.0).astype(np.uint8)


def _edge_indices(edges, names: Sequence[str] | None, n_keypoints: int) -> list[tuple[int, int]]:
    out = []
    for a, b in edges or ():
        pair = []
        for end in (a, b):
            if isinstance(end, str):
                if names is None or end not in names:
                    raise ConfigError.at("overlay edges", "unknown keypoint name", got=end,
                                         fix="use names from keypoint_names (and pass names=)")
                pair.append(list(names).index(end))
            elif 0 <= int(end) < n_keypoints:
                pair.append(int(end))
            else:
                raise ConfigError.at("overlay edges", f"keypoint index outside 0..{n_keypoints-1}",
                                     got=end, fix="use valid keypoint indices")
        out.append((pair[0], pair[1]))
    return out


def _draw(frame: np.ndarray, kp: np.ndarray, show: np.ndarray, colours: np.ndarray, radius: int,
          edges: list[tuple[int, int]]) -> np.ndarray:
    out = np.ascontiguousarray(frame).copy()
    px = np.zeros(kp.shape, np.int64)
    px[show] = np.round(kp[show]).astype(np.int64)
    for i, j in edges:
        if show[i] and show[j]:
            cv2.line(out, tuple(map(int, px[i])), tuple(map(int, px[j])), _EDGE_RGB, 1,
                     cv2.LINE_AA)
    for k in np.flatnonzero(show):
        cv2.circle(out, tuple(map(int, px[k])), int(radius), tuple(int(c) for c in colours[k]),
                   -1, cv2.LINE_AA)
    return out


def _visible(kp: np.ndarray, conf: np.ndarray | None, thresh: float) -> np.ndarray:
    show = np.all(np.isfinite(kp), axis=-1)
    if conf is not None:
        show &= np.nan_to_num(conf, nan=-1.0) >= thresh
    return show


def _default_radius(hw: tuple[int, int]) -> int:
    return max(2, int(round(min(hw) / 100)))


def render_overlay(frame: np.ndarray, keypoints, confidence=None, names: Sequence[str] | None = None,
                   colormap: str = "cool", confidence_thresh: float = 0.9, radius: int | None = None,
                   edges=None) -> np.ndarray:
    """A copy of RGB ``frame (H, W, 3)`` with ``keypoints (K, 2)`` drawn where
    ``confidence (K,) >= confidence_thresh`` (all finite keypoints when confidence is None)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[-1] != 2:
        raise DataError.at("render_overlay: keypoints", "must have shape (K, 2)", got=kp.shape,
                           fix="pass one frame's (x, y) keypoints")
    conf = None if confidence is None else np.asarray(confidence, dtype=np.float64).reshape(-1)
    if conf is not None and conf.shape[0] != kp.shape[0]:
        raise DataError.at("render_overlay: confidence", "needs one value per keypoint",
                           got=conf.shape[0], fix=f"pass {kp.shape[0]} values")
    colours = keypoint_colours(kp.shape[0], colormap)
    radius = _default_radius(frame.shape[:2]) if radius is None else radius
    return _draw(frame, kp, _visible(kp, conf, confidence_thresh), colours, radius,
                 _edge_indices(edges, names, kp.shape[0]))


def write_overlay_video(video_path: str | os.PathLike, keypoints, confidence,
                        out_path: str | os.PathLike, colormap: str = "cool",
                        confidence_thresh: float = 0.9, show_progress: bool = True,
                        radius: int | None = None, names: Sequence[str] | None = None,
                        edges=None, batch_size: int = 64) -> Path:
    """Write ``out_path`` (H.264 where OpenCV can, else mp4v; the source's fps) with ``keypoints (T, K, 2)`` drawn on every
    frame of ``video_path`` where ``confidence (T, K) >= confidence_thresh``; T = video length."""
    kp = np.asarray(keypoints, dtype=np.float64)
    with VideoReader(video_path) as reader:
        n_frames, hw, fps = len(reader), reader.hw, reader.fps or 30.0
    where = os.fspath(video_path)
    if kp.ndim != 3 or kp.shape[-1] != 2 or kp.shape[0] != n_frames:
        raise DataError.at(where, f"keypoints must have shape ({n_frames}, K, 2), one row per "
                           "video frame", got=kp.shape, fix="predict every frame of this video")
    conf = None if confidence is None else np.asarray(confidence, dtype=np.float64)
    if conf is not None and conf.shape != kp.shape[:2]:
        raise DataError.at(where, "confidence must have shape (T, K)", got=conf.shape,
                           fix=f"pass an array of shape {kp.shape[:2]}")
    colours = keypoint_colours(kp.shape[1], colormap)
    pairs = _edge_indices(edges, names, kp.shape[1])
    radius = _default_radius(hw) if radius is None else radius
    show = _visible(kp, conf, confidence_thresh)
    out_path = Path(out_path)
    writer = open_mp4_writer(out_path, fps, hw, fix="check the folder is writable and the name ends in .mp4",
                             codec="h264")
    bar = tqdm(total=n_frames, desc=f"overlay {out_path.name}", unit="frame",
               disable=not progress_enabled(not show_progress))
    try:
        for idx, frames in iter_batches(video_path, batch_size):
            for t, frame in zip(idx, frames):
                if t >= n_frames:
                    break
                drawn = _draw(frame, kp[t], show[t], colours, radius, pairs)
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            bar.update(len(idx))
    finally:
        writer.release()
        bar.close()
    return out_path
