"""The one video reader (OpenCV) every task shares: random access, RGB frames, clear errors."""

from __future__ import annotations

import os

import cv2
import numpy as np

from bioloop.errors import DataError


class VideoReader:
    """Random-access reader of one video file. ``len(reader)`` frames of ``reader.hw`` = (H, W)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise DataError.at(self.path, "video file not found", fix="check the path")
        self._cap = cv2.VideoCapture(self.path)
        if not self._cap.isOpened():
            raise DataError.at(self.path, "OpenCV cannot open this video",
                               fix="re-encode it (e.g. ffmpeg -c:v libx264 -pix_fmt yuv420p)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._len = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.hw = (int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                   int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
        self._pos = 0  # index of the frame the next cap.read() returns

    def __len__(self) -> int:
        return self._len

    @property
    def height(self) -> int:
        return self.hw[0]

    @property
    def width(self) -> int:
        return self.hw[1]

    def read_next(self) -> np.ndarray | None:
        """The next frame in decoding order (RGB), or None at the end of the video."""
        ok, bgr = self._cap.read()
        if not ok:
            return None
        self._pos += 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def read(self, start: int, count: int = 1) -> np.ndarray:
        """Frames ``start .. start+count-1`` as uint8 ``(count, H, W, 3)`` RGB."""
        if start < 0 or count < 1 or start + count > self._len:
            raise DataError.at(self.path, "frame range outside the video",
                               got=(int(start), int(count)),
                               fix=f"ask for frames within 0..{self._len - 1}")
        if start != self._pos:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, int(start))
            self._pos = int(start)
        out = np.empty((count, *self.hw, 3), np.uint8)
        for i in range(count):
            frame = self.read_next()
            if frame is None:
                raise DataError.at(self.path, f"could not decode frame {start + i}",
                                   got=self._len, fix="the file may be truncated; re-encode it")
            out[i] = frame
        return out

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
