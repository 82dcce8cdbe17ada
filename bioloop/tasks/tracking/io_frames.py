"""Lazy frame sources for tracking sequences: a video file, a list of image files, a tif stack.

Each source is a picklable callable ``source(t) -> frame`` that opens its file on first use (so a
``TrackSequence`` can go to DataLoader workers) and never holds more than one frame. Frames are
``(H, W, C)`` uint8/uint16 with C = 1 (grey) or 3 (RGB), or ``(Z, H, W)`` for volumes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from bioloop.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".webm")


def _as_hwc(img: np.ndarray, volumetric: bool = False) -> np.ndarray:
    if volumetric:
        return img
    if img.ndim == 2:
        return img[..., None]
    return img


def read_image(path: str, volumetric: bool = False) -> np.ndarray:
    """One image file as (H, W, C) (RGB order) or, with ``volumetric``, a (Z, H, W) tif."""
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile

        try:
            img = tifffile.imread(path)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
            raise DataError.at(path, f"cannot read this tif ({exc})", fix="check the file") from exc
        return _as_hwc(np.asarray(img), volumetric)
    import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError.at(path, "cannot read this image", fix="check the file exists and is an image")
    if img.ndim == 3:
        img = img[..., :3][..., ::-1]
    return np.ascontiguousarray(_as_hwc(img))


class ImageFrames:
    """Frame t = the t-th file of ``paths`` (None entries raise)."""

    def __init__(self, paths: Sequence[str | None], volumetric: bool = False, where: str = ""):
        self.paths = [None if p is None else os.fspath(p) for p in paths]
        self.volumetric = volumetric
        self.where = where

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, t: int) -> np.ndarray:
        if not 0 <= t < len(self.paths) or self.paths[t] is None:
            raise DataError.at(self.where, f"no image for frame {t}", got=len(self.paths),
                               fix="check the image folder holds every frame")
        return read_image(self.paths[t], self.volumetric)


class VideoFrames:
    """Frame t of a video file through OpenCV (RGB), opened on first use."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._reader = None

    def __getstate__(self):
        return {"path": self.path, "_reader": None}

    def __call__(self, t: int) -> np.ndarray:
        if self._reader is None:
            from bioloop.data.video import VideoReader

            self._reader = VideoReader(self.path)
        return self._reader.read(int(t), 1)[0]


class TifStackFrames:
    """Frame t of one multi-page tif holding a (T, H, W[, C]) or (T, Z, H, W) stack."""

    def __init__(self, path: str, volumetric: bool = False):
        import tifffile

        self.path = os.fspath(path)
        self.volumetric = volumetric
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            self.shape = tuple(series.shape)
            self.n_pages = len(series.pages)
        self.pages_per_frame = max(1, self.n_pages // self.shape[0]) if self.shape else 1

    def __len__(self) -> int:
        return int(self.shape[0])

    def __call__(self, t: int) -> np.ndarray:
        import tifffile

        if not 0 <= t < len(self):
            raise DataError.at(self.path, f"no frame {t} in this stack", got=self.shape,
                               fix=f"ask for frames 0..{len(self) - 1}")
        k = self.pages_per_frame
        key = t * k if k == 1 else range(t * k, (t + 1) * k)
        img = np.asarray(tifffile.imread(self.path, key=key))
        return img.reshape(self.shape[1:]) if self.volumetric else _as_hwc(img.reshape(self.shape[1:]))


class SleapVideoFrames:
    """Frame t of video ``index`` of a .slp file (embedded frames, other backends) via sleap-io."""

    def __init__(self, slp_path: str, index: int):
        self.slp_path, self.index, self._video = os.fspath(slp_path), index, None

    def __getstate__(self):
        return {"slp_path": self.slp_path, "index": self.index, "_video": None}

    def __call__(self, t: int) -> np.ndarray:
        if self._video is None:
            import sleap_io as sio

            self._video = sio.load_slp(self.slp_path, open_videos=True).videos[self.index]
        try:
            return np.asarray(self._video[int(t)])
        except Exception as exc:  # noqa: BLE001
            raise DataError.at(self.slp_path, f"cannot read frame {t} of its video {self.index} ({exc})",
                               fix="pass video_path= with the video file") from exc


class MissingFrames:
    """A frame source for a sequence whose images cannot be found: raises with the reason."""

    def __init__(self, where: str, what: str, fix: str):
        self.where, self.what, self.fix = where, what, fix

    def __call__(self, t: int) -> np.ndarray:
        raise DataError.at(self.where, self.what, fix=self.fix)


def video_info(path: str) -> tuple[int, tuple[int, int]] | None:
    """(number of frames, (H, W)) of a video from its header, or None when OpenCV cannot open it."""
    import cv2

    cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            return None
        return (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
                (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))))
    finally:
        cap.release()


_NUMBER = re.compile(r"(\d+)(?=\.[^.]+$)")


def numbered_files(folder: str, suffixes=IMAGE_SUFFIXES, prefix: str = "") -> dict[int, str]:
    """{number: path} of the files ``<prefix><digits>.<suffix>`` in ``folder`` (e.g. t000.tif, 000001.jpg)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if not name.lower().endswith(tuple(suffixes)) or not name.startswith(prefix):
            continue
        m = _NUMBER.search(name)
        if m and name[len(prefix):m.start()] == "":
            out[int(m.group(1))] = os.path.join(folder, name)
    return out


def frame_source(images: str | os.PathLike | None, n_frames: int, where: str, first_number: int | None = None,
                 volumetric: bool = False):
    """A source for ``images``: a video file, a multi-page tif stack, or a folder of numbered images
    (the smallest number, or ``first_number`` when given, is frame 0). Returns (source, n_frames, (H, W))."""
    if images is None:
        return MissingFrames(where, "no images for this sequence",
                             "pass images= (a video, a tif stack or an image folder)"), n_frames, None
    path = os.fspath(images)
    if os.path.isdir(path):
        files = numbered_files(path)
        if not files:
            raise DataError.at(path, "no numbered images in this folder", fix="expect e.g. 000001.jpg")
        first_number = min(files) if first_number is None else first_number
        n = max(n_frames, max(files) - first_number + 1)
        paths = [files.get(t + first_number) for t in range(n)]
        first = read_image(next(p for p in paths if p is not None), volumetric)
        hw = tuple(first.shape[-2:]) if volumetric else tuple(first.shape[:2])
        return ImageFrames(paths, volumetric, path), n, hw
    if not os.path.isfile(path):
        raise DataError.at(path, "image source not found", fix="pass an existing video, tif or folder")
    if path.lower().endswith((".tif", ".tiff")):
        stack = TifStackFrames(path, volumetric)
        hw = tuple(stack.shape[-2:]) if volumetric or len(stack.shape) == 3 else tuple(stack.shape[1:3])
        return stack, max(n_frames, len(stack)), hw
    info = video_info(path)
    if info is None:
        raise DataError.at(path, "OpenCV cannot open this video", fix="re-encode it (e.g. ffmpeg -c:v libx264)")
    return VideoFrames(path), max(n_frames, info[0]), info[1]
