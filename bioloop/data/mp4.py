"""Writing mp4 videos: one opener with a clear error, H.264 where the installed codecs allow.

OpenCV's pip wheels usually carry no H.264 encoder, and MPEG-4 part 2 (``mp4v``) is what they can
always write; browsers and many viewers do not play mp4v. ``open_mp4_writer(..., codec="h264")``
probes once per process for an H.264 writer: OpenCV's (fourcc ``avc1``, then ``H264``), else the
ffmpeg that imageio-ffmpeg bundles (installed with sleap-io) with libx264 (even frame sizes, which
yuv420p needs); otherwise it falls back to mp4v with one printed line saying so.
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


class _FfmpegH264Writer:
    """``cv2.VideoWriter``'s write/release/isOpened for BGR frames, encoded with libx264 by the ffmpeg
    binary that imageio-ffmpeg bundles (frames are piped to it)."""

    def __init__(self, path, fps: float, hw: tuple[int, int]):
        import imageio_ffmpeg

        self._frames = imageio_ffmpeg.write_frames(str(path), (int(hw[1]), int(hw[0])), pix_fmt_in="bgr24",
                                                   fps=float(fps), codec="libx264", macro_block_size=1,
                                                   ffmpeg_log_level="error")
        self._frames.send(None)  # starts ffmpeg

    def isOpened(self) -> bool:  # noqa: N802 - cv2.VideoWriter's name
        return self._frames is not None

    def write(self, frame: np.ndarray) -> None:
        self._frames.send(np.ascontiguousarray(frame, dtype=np.uint8))

    def release(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None


def ffmpeg_h264() -> bool:
    """Whether imageio-ffmpeg's bundled ffmpeg writes H.264 here (probed once per process)."""
    if "ffmpeg" not in _probed:
        ok = False
        try:
            with tempfile.TemporaryDirectory() as folder:
                probe = os.path.join(folder, "probe.mp4")
                writer = _FfmpegH264Writer(probe, 10.0, (64, 64))
                for _ in range(2):
                    writer.write(np.zeros((64, 64, 3), np.uint8))
                writer.release()
                ok = os.path.getsize(probe) > 0
        except Exception:  # noqa: BLE001 - not installed, no binary, no libx264: all mean "no"
            ok = False
        _probed["ffmpeg"] = "libx264" if ok else None
    return _probed["ffmpeg"] is not None


def open_mp4_writer(path, fps: float, hw: tuple[int, int], fix: str, codec: str = "mp4v"):
    """An opened writer (``write(bgr_frame)``, ``release()``) for frames of size ``hw`` = (H, W); the
    folder is created.

    ``codec="h264"``: H.264 when OpenCV or imageio-ffmpeg can write it here, else mp4v with one
    printed line.
    """
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = "mp4v"
    if codec == "h264":
        fourcc = h264_fourcc() or "mp4v"
        if fourcc == "mp4v" and hw[0] % 2 == 0 and hw[1] % 2 == 0 and ffmpeg_h264():
            return _FfmpegH264Writer(path, fps, hw)
        if fourcc == "mp4v":
            print(f"{path.name}: neither this OpenCV build ({'/'.join(H264_FOURCCS)}) nor imageio-ffmpeg can write "
                  f"H.264 for {hw[1]}x{hw[0]} frames here; writing MPEG-4 part 2 (mp4v), which browsers may not "
                  "play (re-encode with ffmpeg -c:v libx264 if needed)", file=sys.stderr, flush=True)
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
