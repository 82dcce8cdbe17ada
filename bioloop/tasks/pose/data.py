"""Labeled pose frames as a torch Dataset: load, augment, resize, normalise.

Resizing maps pixel centres exactly: ``x' = (x + 0.5) * W' / W - 0.5`` (the convention of
cv2.resize), and ``unresize_keypoints`` is its exact inverse, so predictions made on resized
images go back to frame pixels without drift.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from bioloop.errors import ConfigError, DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "resize_keypoints", "unresize_keypoints",
           "resize_image", "check_resize_dims", "FrameReader", "PoseFrames"]

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

    def _video(self, path: str, index: int) -> np.ndarray:
        import cv2

        entry = self._videos.get(path)
        if entry is None:
            cap = cv2.VideoCapture(path)
            if not cap.isOpened():
                raise DataError.at(path, "OpenCV cannot open the video", fix="check the path and "
                                   "that the codec is supported (mp4/avi)")
            entry = self._videos[path] = [cap, 0]
        cap, position = entry
        if position != index:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        if not ok:
            entry[1] = -1
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            raise DataError.at(path, f"cannot read frame {index} (the video has {count} frames)",
                               got=index, fix="check the frame indices in the label file")
        entry[1] = index + 1
        return _rgb3(frame[..., ::-1])

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
    """

    def __init__(self, labels, indices=None, *, image_resize_dims=None, augmentation=None,
                 where: str = "data.image_resize_dims"):
        self.labels = labels
        self.indices = np.arange(labels.num_frames) if indices is None else \
            np.asarray(indices, dtype=np.int64).reshape(-1)
        self.resize_hw = check_resize_dims(image_resize_dims, where)
        self.augmentation = augmentation
        self.reader = FrameReader()

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw RGB frame and its (A, K, 2) keypoints, before augmentation and resizing."""
        row = int(self.indices[position])
        lab = self.labels
        video = lab.video_paths[row] if lab.video_paths else ""
        fidx = None if lab.frame_indices is None else int(lab.frame_indices[row])
        image = self.reader.read(lab.image_paths[row], video, fidx)
        return _rgb3(image), np.asarray(lab.keypoints[row], dtype=np.float64)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            position, seed = key
        else:
            position, seed = key, None
        image, kp = self.load(int(position))
        orig_hw = image.shape[:2]
        if seed is not None and self.augmentation is not None:
            image, kp = self.augmentation(image, kp, np.random.default_rng(seed))
        if self.resize_hw is not None:
            kp = resize_keypoints(kp, image.shape[:2], self.resize_hw)  # a user crop may change the size
            image = resize_image(image, self.resize_hw)
        x = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return {"image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
                "keypoints": torch.from_numpy(kp.reshape(-1, 2).astype(np.float32)),
                "orig_hw": torch.tensor(orig_hw, dtype=torch.int64),
                "index": int(self.indices[int(position)])}
