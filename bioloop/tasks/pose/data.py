"""Labeled pose frames as a torch Dataset: load, augment, resize, normalise.

Resizing maps pixel centres exactly: ``x' = (x + 0.5) * W' / W - 0.5`` (the convention of
cv2.resize), and ``unresize_keypoints`` is its exact inverse, so predictions made on resized
images go back to frame pixels without drift.

Temporal context (``context`` c > 0, for ``heatmap_mhcrnn``): frames t-c..t+c around each labeled
frame, as Lightning Pose reads them: for an image ``.../img0123.png`` the files with the
neighbouring numbers in the same folder (same zero padding; a missing file gives the centre
frame); for a video frame the neighbouring video frames (the first/last frame replicated).
"""

from __future__ import annotations

from collections.abc import Mapping

import os
import re

import numpy as np
import torch
from torch.utils.data import Dataset

from bioloop.errors import ConfigError, DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "resize_keypoints", "unresize_keypoints",
           "resize_image", "check_resize_dims", "context_paths", "normalize_frames", "FrameReader",
           "PoseFrames"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _scale(orig_hw, new_hw) -> np.ndarray:
    (h, w), (nh, nw) = orig_hw, new_hw
    return np.array([nw / w, nh / h], dtype=np.float64)


def resize_keypoints(xy, orig_hw, new_hw) -> np.ndarray:
    """(x, y) frame pixels of an ``orig_hw`` (H, W) image -> pixels of the image resized to ``new_hw``."""
    xy = np.asarray(xy, dtype=np.float64)
    return (xy + 0.5) * _scale(orig_hw, new_hw) - 0.5


def unresize_keypoints(xy, orig_hw, new_hw) -> np.ndarray:
    """Inverse of ``resize_keypoints``: pixels of the resized image -> frame pixels."""
    xy = np.asarray(xy, dtype=np.float64)
    return (xy + 0.5) / _scale(orig_hw, new_hw) - 0.5


def resize_image(image: np.ndarray, new_hw) -> np.ndarray:
    """cv2 resize to (H, W): INTER_AREA when shrinking both sides, else INTER_LINEAR."""
    import cv2

    nh, nw = (int(s) for s in new_hw)
    h, w = image.shape[:2]
    if (h, w) == (nh, nw):
        return image
    interp = cv2.INTER_AREA if nh <= h and nw <= w else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=interp)
    return out[..., None] if image.ndim == 3 and out.ndim == 2 else out


def check_resize_dims(dims, where: str = "data.image_resize_dims") -> tuple[int, int] | None:
    """``(H, W)``, ``{"height": H, "width": W}`` or None -> (H, W) or None."""
    if dims is None:
        return None
    if isinstance(dims, Mapping):
        if set(dims) != {"height", "width"}:
            raise ConfigError.at(where, "image_resize_dims needs exactly 'height' and 'width'",
                                 got=dict(dims), fix="e.g. {'height': 256, 'width': 256}")
        dims = (dims["height"], dims["width"])
    try:
        h, w = dims
    except (TypeError, ValueError):
        raise ConfigError.at(where, "image_resize_dims must be (height, width)", got=dims,
                             fix="e.g. (256, 256)") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError.at(where, "image_resize_dims must be positive integers", got=dims,
                                 fix="e.g. (256, 256)")
    return int(h), int(w)


def normalize_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) RGB -> float32 (..., 3, H, W), ImageNet-normalised."""
    x = np.asarray(frames, dtype=np.float32) * (1.0 / 255.0)
    x -= IMAGENET_MEAN
    x /= IMAGENET_STD
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[^.]*)?$")


def context_paths(image_path: str, context: int, exists=os.path.isfile) -> list[str]:
    """The ``2*context+1`` image files t-context..t+context around ``image_path``.

    ``.../img0123.png`` -> ``.../img0121.png`` .. ``.../img0125.png`` (the number's zero padding
    kept); a neighbour that does not exist (``exists(path)`` is False, e.g. before frame 0) and
    every neighbour of a name without a trailing number is the centre image itself.
    """
    folder, name = os.path.split(str(image_path))
    match = _NUMBERED.match(name)
    if match is None:
        return [str(image_path)] * (2 * context + 1)
    stem, digits, suffix = match.group(1), match.group(2), match.group(3) or ""
    t, width = int(digits), len(digits)
    out = []
    for i in range(t - context, t + context + 1):
        path = os.path.join(folder, f"{stem}{i:0{width}d}{suffix}") if i >= 0 else ""
        out.append(path if i != t and path and exists(path) else str(image_path))
    return out


def _rgb3(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 -> HxWx3 uint8."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


class FrameReader:
    """Reads labeled frames as RGB uint8 HxWx3: images by path, video frames by index.

    One cv2.VideoCapture per video is kept open; reading the next frame does not seek.
    Pickling (DataLoader workers) drops the open readers.
    """

    def __init__(self):
        self._videos: dict[str, list] = {}  # path -> [capture, next frame index]

    def __getstate__(self):
        return {"_videos": {}}

    def read(self, image_path: str = "", video_path: str = "", frame_idx: int | None = None) -> np.ndarray:
        if image_path:
            return self._image(image_path)
        if video_path and frame_idx is not None:
            return self._video(video_path, int(frame_idx))
        raise DataError.at("labels", "a frame has neither an image path nor a video and frame index",
                           fix="check the label file's image column")

    def _image(self, path: str) -> np.ndarray:
        import cv2

        image = cv2.imread(path, cv2.IMREAD_COLOR)  # grayscale and RGBA come back as 3 channels
        if image is None:
            raise DataError.at(path, "cannot read the image", fix="check that the file exists "
                               "and is a PNG/JPEG/TIFF image")
        return np.ascontiguousarray(image[..., ::-1])

    def read_window(self, image_path: str = "", video_path: str = "", frame_idx: int | None = None,
                    context: int = 0) -> list[np.ndarray]:
        """Frames t-context..t+context around a labeled frame (see ``context_paths``; video edges
        replicated). A video window costs at most one seek."""
        if image_path:
            read: dict[str, np.ndarray] = {}  # a missing neighbour repeats the centre: read it once
            return [read[p] if p in read else read.setdefault(p, self._image(p))
                    for p in context_paths(image_path, context)]
        if video_path and frame_idx is not None:
            t = int(frame_idx)
            lo = max(0, t - context)
            frames = self._video_run(video_path, lo, t + context + 1, need=t + 1)
            return [frames[min(max(i, 0), lo + len(frames) - 1) - lo]
                    for i in range(t - context, t + context + 1)]
        return [self.read(image_path, video_path, frame_idx)]

    def _capture(self, path: str) -> list:
        import cv2

        entry = self._videos.get(path)
        if entry is None:
            cap = cv2.VideoCapture(path)
            if not cap.isOpened():
                raise DataError.at(path, "OpenCV cannot open the video", fix="check the path and "
                                   "that the codec is supported (mp4/avi)")
            entry = self._videos[path] = [cap, 0]
        return entry

    def _video(self, path: str, index: int) -> np.ndarray:
        return self._video_run(path, index, index + 1, need=index + 1)[0]

    def _video_run(self, path: str, start: int, stop: int, need: int) -> list[np.ndarray]:
        """Frames start..stop-1 (fewer at the end of the video; at least up to ``need`` - 1)."""
        import cv2

        entry = self._capture(path)
        cap = entry[0]
        if entry[1] != start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        frames = []
        for index in range(start, stop):
            ok, frame = cap.read()
            if not ok:
                entry[1] = -1
                if index < need:
                    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
                    raise DataError.at(path, f"cannot read frame {need - 1} (the video has {count} "
                                       "frames)", got=need - 1, fix="check the frame indices in the "
                                       "label file")
                return frames
            frames.append(_rgb3(frame[..., ::-1]))
            entry[1] = index + 1
        return frames

    def close(self) -> None:
        for cap, _ in self._videos.values():
            cap.release()
        self._videos.clear()


class PoseFrames(Dataset):
    """Labeled frames ``indices`` of a PoseLabels, ready for a model.

    ``ds[i]`` (evaluation) or ``ds[(i, seed)]`` (training: augmentation drawn from
    ``numpy.random.default_rng(seed)``) gives ``{"image": float32 (3, H, W) ImageNet-normalised,
    "keypoints": float32 (K, 2) or (A*K, 2) animal-major in resized pixels (NaN = missing),
    "orig_hw": int64 (2,) frame size before resizing, "index": the frame's row in the labels}``.
    With ``context`` c > 0 "image" is (2c+1, 3, H, W), frames t-c..t+c (module docstring), every
    frame augmented with the same draw (a fresh rng from the same seed per frame); keypoints and
    orig_hw are the centre frame's.
    """

    def __init__(self, labels, indices=None, *, image_resize_dims=None, augmentation=None,
                 where: str = "data.image_resize_dims", context: int = 0):
        self.labels = labels
        self.indices = np.arange(labels.num_frames) if indices is None else \
            np.asarray(indices, dtype=np.int64).reshape(-1)
        self.resize_hw = check_resize_dims(image_resize_dims, where)
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
            raise ConfigError.at("PoseFrames: context", "must be an integer >= 0", got=context,
                                 fix="use 0 for base models, 2 for heatmap_mhcrnn")
        self.context = int(context)
        self.augmentation = augmentation
        self.reader = FrameReader()

    def __len__(self) -> int:
        return len(self.indices)

    def _locate(self, position: int) -> tuple[str, str, int | None]:
        row = int(self.indices[position])
        lab = self.labels
        video = lab.video_paths[row] if lab.video_paths else ""
        fidx = None if lab.frame_indices is None else int(lab.frame_indices[row])
        return lab.image_paths[row], video, fidx

    def _keypoints(self, position: int) -> np.ndarray:
        return np.asarray(self.labels.keypoints[int(self.indices[position])], dtype=np.float64)

    def load(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw RGB frame and its (A, K, 2) keypoints, before augmentation and resizing."""
        image = self.reader.read(*self._locate(position))
        return _rgb3(image), self._keypoints(position)

    def load_window(self, position: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The raw RGB frames t-context..t+context and the centre frame's (A, K, 2) keypoints."""
        frames = [_rgb3(f) for f in self.reader.read_window(*self._locate(position), self.context)]
        hw = frames[self.context].shape[:2]
        frames = [f if f.shape[:2] == hw else resize_image(f, hw) for f in frames]
        return frames, self._keypoints(position)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            position, seed = key
        else:
            position, seed = key, None
        c = self.context
        if c:
            frames, kp = self.load_window(int(position))
        else:
            image, kp = self.load(int(position))
            frames = [image]
        orig_hw = frames[c].shape[:2]
        if seed is not None and self.augmentation is not None:
            out = [self.augmentation(f, kp, np.random.default_rng(seed)) for f in frames]
            frames, kp = [f for f, _ in out], out[c][1]
        if self.resize_hw is not None:
            kp = resize_keypoints(kp, frames[c].shape[:2], self.resize_hw)  # a user crop may change the size
            frames = [resize_image(f, self.resize_hw) for f in frames]
        x = normalize_frames(np.stack(frames) if c else frames[0])
        return {"image": torch.from_numpy(x),
                "keypoints": torch.from_numpy(kp.reshape(-1, 2).astype(np.float32)),
                "orig_hw": torch.tensor(orig_hw, dtype=torch.int64),
                "index": int(self.indices[int(position)])}
