"""Writing mp4 videos with OpenCV: one opener with a clear error, H.264 where the installed codecs allow.

OpenCV's pip wheels usually carry no H.264 encoder, and MPEG-4 part 2 (``mp4v``) is what they can
always write; browsers and many viewers do not play mp4v. ``open_mp4_writer(..., codec="h264")``
probes once per process for an H.264 writer (fourcc ``avc1``, then ``H264``) and falls back to
mp4v with one printed line saying so.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from bioloop.errors import DataError

H264_FOURCCS = ("avc1", "H264")
_probed: dict[str, str | None] = {}


@contextlib.contextmanager
def _silenced_stderr():
    """Hide what FFmpeg prints to file descriptor 2 while a codec is probed (it reports every failure)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            sys.stderr.flush()
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def h264_fourcc() -> str | None:
    """The first fourcc of ``H264_FOURCCS`` OpenCV can write an mp4 with here, or None (probed once)."""
    if "h264" not in _probed:
        import cv2

        found = None
        with tempfile.TemporaryDirectory() as folder, _silenced_stderr():
            for code in H264_FOURCCS:
                probe = os.path.join(folder, f"probe_{code}.mp4")
                writer = cv2.VideoWriter(probe, cv2.VideoWriter_fourcc(*code), 10.0, (64, 64))
                ok = writer.isOpened()
                if ok:
                    writer.write(np.zeros((64, 64, 3), np.uint8))
                writer.release()
                if ok and os.path.getsize(probe) > 0:
                    found = code
                    break
        _probed["h264"] = found
    return _probed["h264"]


def open_mp4_writer(path, fps: float, hw: tuple[int, int], fix: str, codec: str = "mp4v"):
    """An opened ``cv2.VideoWriter`` for BGR frames of size ``hw`` = (H, W); the folder is created.

    ``codec="h264"``: H.264 when OpenCV can write it here, else mp4v with one printed line.
    """
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = "mp4v"
    if codec == "h264":
        fourcc = h264_fourcc() or "mp4v"
        if fourcc == "mp4v":
            print(f"{path.name}: this OpenCV build cannot write H.264 ({'/'.join(H264_FOURCCS)}); writing MPEG-4 "
                  "part 2 (mp4v), which browsers may not play (re-encode with ffmpeg -c:v libx264 if needed)",
                  file=sys.stderr, flush=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (int(hw[1]), int(hw[0])))
    if not writer.isOpened():
        raise DataError.at(str(path), f"OpenCV cannot open an {fourcc} video writer", fix=fix)
    return writer


def write_mp4(path, frames: np.ndarray, fps: float, fix: str) -> None:
    """Write RGB uint8 ``frames`` (T, H, W, 3) as an mp4 (mp4v)."""
    writer = open_mp4_writer(path, fps, frames.shape[1:3], fix)
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()
