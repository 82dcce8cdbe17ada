"""Writing mp4 videos (OpenCV, mp4v): one opener with a clear error, and a whole-array writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioloop.errors import DataError


def open_mp4_writer(path, fps: float, hw: tuple[int, int], fix: str):
    """An opened ``cv2.VideoWriter`` for BGR frames of size ``hw`` = (H, W); the folder is created."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (int(hw[1]), int(hw[0])))
    if not writer.isOpened():
        raise DataError.at(str(path), "OpenCV cannot open an mp4v video writer", fix=fix)
    return writer


def write_mp4(path, frames: np.ndarray, fps: float, fix: str) -> None:
    """Write RGB uint8 ``frames`` (T, H, W, 3) as an mp4."""
    writer = open_mp4_writer(path, fps, frames.shape[1:3], fix)
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()
