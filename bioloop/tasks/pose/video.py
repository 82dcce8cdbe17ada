"""Video frames through OpenCV (no DALI): random access, batched and temporal-context iteration,
and a dataset of short unlabeled clips for the unsupervised pose losses.

Frames are uint8 RGB arrays ``(H, W, 3)``; frame ``i`` is the ``i``-th decoded frame (0-based).
``VideoReader.read`` reads sequentially and only seeks when asked for a frame that is not the next
one. ``iter_batches`` and ``iter_context_batches`` decode every frame exactly once, in order; their
batch sizes are meant to come from the reference's ``dali.base.predict.sequence_length`` and
``dali.context.predict.sequence_length`` settings, ``UnlabeledFrames``'s ``sequence_length`` from
``dali.base.train.sequence_length`` (context models: ``dali.context.train.batch_size``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from bioloop.data.video import VideoReader  # re-exported: the one video reader
from bioloop.errors import ConfigError, DataError

__all__ = ["UnlabeledFrames", "VideoReader", "iter_batches", "iter_context_batches"]


def _resize(frame: np.ndarray, resize_hw: tuple[int, int] | None) -> np.ndarray:
    """The labeled frames' resize (``data.resize_image``), so video and training pixels agree."""
    if resize_hw is None:
        return frame
    from bioloop.tasks.pose.data import resize_image

    return resize_image(frame, resize_hw)


def _check_positive(where: str, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError.at(where, f"{what} must be a positive integer", got=value,
                             fix="pass an int >= 1")
    return int(value)


def iter_batches(path: str | os.PathLike, batch_size: int, resize_hw: tuple[int, int] | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frame_indices (B,), frames (B, H, W, 3) uint8)`` over the whole video, in order.

    The last batch may be shorter. ``resize_hw`` = (H, W) resizes every frame."""
    batch_size = _check_positive("iter_batches: batch_size", batch_size, "batch_size")
    with VideoReader(path) as reader:
        index = 0
        while True:
            frames = []
            while len(frames) < batch_size:
                frame = reader.read_next()
                if frame is None:
                    break
                frames.append(_resize(frame, resize_hw))
            if not frames:
                return
            yield np.arange(index, index + len(frames)), np.stack(frames)
            index += len(frames)
            if len(frames) < batch_size:
                return


def iter_context_batches(path: str | os.PathLike, batch_size: int, context: int = 2,
                         resize_hw: tuple[int, int] | None = None
                         ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frame_indices (B,), windows (B, 2*context+1, H, W, 3) uint8)``.

    ``windows[b, j]`` is frame ``t + j - context`` for output frame ``t = frame_indices[b]``; frames
    before the first and after the last are replaced by the first/last frame. Each frame is decoded
    once and kept in a buffer only while some window still needs it."""
    batch_size = _check_positive("iter_context_batches: batch_size", batch_size, "batch_size")
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
        raise ConfigError.at("iter_context_batches: context", "must be an integer >= 0",
                             got=context, fix="use 2 for the t-2..t+2 window")
    offsets = np.arange(-context, context + 1)
    with VideoReader(path) as reader:
        buf: list[np.ndarray] = []  # frames buf_start .. buf_start + len(buf) - 1
        buf_start, n_total, t0 = 0, None, 0
        while True:
            need = t0 + batch_size - 1 + context  # last frame index this batch may use
            while n_total is None and buf_start + len(buf) <= need:
                frame = reader.read_next()
                if frame is None:
                    n_total = buf_start + len(buf)
                else:
                    buf.append(_resize(frame, resize_hw))
            n_avail = n_total if n_total is not None else buf_start + len(buf)
            if t0 >= n_avail:
                return
            t = np.arange(t0, min(t0 + batch_size, n_avail))
            idx = np.clip(t[:, None] + offsets[None, :], 0, n_avail - 1) - buf_start
            chunk = np.stack(buf)
            yield t, chunk[idx]
            t0 = int(t[-1]) + 1
            drop = max(0, t0 - context - buf_start)
            if drop:
                del buf[:drop]
                buf_start += drop


class UnlabeledFrames(torch.utils.data.Dataset):
    """Short clips of ``sequence_length`` consecutive frames from unlabeled videos.

    ``dataset[(index, seed)]`` draws the video (weighted by its number of possible clips) and the
    start frame from ``numpy.random.default_rng(seed)``; ``index`` is ignored beyond the contract.
    Returns ``{"images": float32 (T, 3, H, W) in [0, 1], "frame_indices": int64 (T,),
    "video": int}``; with ``context > 0`` images are ``(T, 2*context+1, 3, H, W)`` (frames
    ``t-context .. t+context``, edge frames replicated). ``length`` is the nominal epoch size.
    """

    def __init__(self, video_paths: Sequence[str | os.PathLike], sequence_length: int,
                 resize_hw: tuple[int, int] | None = None, context: int = 0, length: int = 1000):
        where = "UnlabeledFrames"
        if not video_paths:
            raise DataError.at(f"{where}: video_paths", "no unlabeled videos given", got=[],
                               fix="point the unlabeled-video setting at a folder of .mp4 files")
        self.sequence_length = _check_positive(f"{where}: sequence_length", sequence_length,
                                               "sequence_length")
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
            raise ConfigError.at(f"{where}: context", "must be an integer >= 0", got=context,
                                 fix="use 0 for base models, 2 for heatmap_mhcrnn")
        self.context = int(context)
        self.length = _check_positive(f"{where}: length", length, "length")
        self.resize_hw = None if resize_hw is None else (int(resize_hw[0]), int(resize_hw[1]))
        self.video_paths = [os.fspath(p) for p in video_paths]
        self.n_frames = []
        for path in self.video_paths:
            with VideoReader(path) as reader:
                n = len(reader)
            if n < self.sequence_length:
                raise DataError.at(path, "video is shorter than sequence_length", got=n,
                                   fix=f"use videos with >= {self.sequence_length} frames or "
                                       "lower sequence_length")
            self.n_frames.append(n)
        starts = np.array([n - self.sequence_length + 1 for n in self.n_frames], float)
        self._video_p = starts / starts.sum()
        self._readers: dict[int, VideoReader] = {}  # opened lazily, per worker process

    def __len__(self) -> int:
        return self.length

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"] = {}  # cv2 captures are not picklable; workers reopen
        return state

    def _reader(self, v: int) -> VideoReader:
        if v not in self._readers:
            self._readers[v] = VideoReader(self.video_paths[v])
        return self._readers[v]

    def __getitem__(self, key) -> dict:
        seed = key[1] if isinstance(key, tuple) else key
        rng = np.random.default_rng(seed)
        v = int(rng.choice(len(self.video_paths), p=self._video_p))
        n, c, T = self.n_frames[v], self.context, self.sequence_length
        start = int(rng.integers(0, n - T + 1))
        lo, hi = max(0, start - c), min(n, start + T + c)
        raw = self._reader(v).read(lo, hi - lo)
        frames = np.stack([_resize(f, self.resize_hw) for f in raw])
        t = np.arange(start, start + T)
        if c:
            idx = np.clip(t[:, None] + np.arange(-c, c + 1)[None, :], 0, n - 1) - lo
            frames = frames[idx]  # (T, 2c+1, H, W, 3)
        images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(frames, -1, -3)))
        return {"images": images.float().div_(255.0),
                "frame_indices": torch.from_numpy(t.astype(np.int64)), "video": v}
