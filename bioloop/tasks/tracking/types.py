"""The data every tracking module shares: instances per frame, and a sequence of frames.

Conventions (the same as the pose task): coordinates are (x, y) pixels of the full frame with
pixel centres at integers (pixel (0, 0) covers [-0.5, 0.5)); boxes are ``(x0, y0, x1, y1)`` edges in
that frame (a one-pixel box around pixel (3, 4) is (2.5, 3.5, 3.5, 4.5)); missing points are NaN.
3D data (Cell Tracking Challenge) keep (x, y) in ``points``/``boxes`` and add ``z`` per instance.
Track ids are integers >= 0; -1 means "not assigned yet".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import numpy as np


def _points(value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    return arr.reshape(0, 0, 2) if arr.size == 0 and arr.ndim < 3 else arr


@attrs.define(eq=False)
class Instances:
    """The instances of one frame: ``points (n, P, 2)``, ``boxes (n, 4)``, ``track_ids (n,)``, ``scores (n,)``.

    ``mask_ids (n,)``: each instance's value in the frame's label image (Cell Tracking Challenge
    masks), or None. ``z (n,)``: the centroid's z for 3D data, or None. ``track_scores (n,)``: the
    tracker's association score of each instance's assignment (see ``tracker.py``), or None.
    """

    frame: int
    points: np.ndarray = attrs.field(converter=_points)
    boxes: np.ndarray = attrs.field(converter=lambda v: np.asarray(v, dtype=np.float64).reshape(-1, 4))
    track_ids: np.ndarray = attrs.field(converter=lambda v: np.asarray(v, dtype=np.int64).reshape(-1))
    scores: np.ndarray | None = None
    mask_ids: np.ndarray | None = None
    z: np.ndarray | None = None
    track_scores: np.ndarray | None = None

    def __attrs_post_init__(self):
        n = len(self.boxes)
        if self.scores is None:
            self.scores = np.ones(n)
        if len(self.track_ids) != n or len(self.points) != n or len(self.scores) != n:
            raise ValueError(f"frame {self.frame}: points {self.points.shape}, boxes {self.boxes.shape}, "
                             f"track_ids {self.track_ids.shape} and scores disagree on the number of instances")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def centroids(self) -> np.ndarray:
        """(n, 2) mean of each instance's finite points, else its box centre."""
        box_c = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2
        if self.points.size == 0:
            return box_c
        finite = np.isfinite(self.points).all(-1)
        counts = finite.sum(1)
        sums = np.where(finite[..., None], self.points, 0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / counts[:, None]
        return np.where(counts[:, None] > 0, mean, box_c)


@attrs.define(eq=False)
class TrackSequence:
    """One video (or image sequence) with its instances per frame.

    ``read_frame(t)`` returns frame t as HxWxC uint8/uint16 (C = 1 or 3), or (Z, H, W) for 3D
    data; ``read_labels(t)`` the label image of frame t (CTC masks) when there is one.
    ``frames[t]`` are the instances of frame t (len(frames) == number of frames).
    """

    name: str
    frames: list[Instances]
    read_frame: Callable[[int], np.ndarray]
    node_names: list[str] = attrs.field(factory=lambda: ["centroid"])
    read_labels: Callable[[int], np.ndarray] | None = None
    image_hw: tuple[int, int] | None = None
    source: str = ""
    ndim: int = 2  # 3 for volumetric CTC data
    video: str | None = None  # the video file the frames are read from (SLEAP: after any remap), when known

    def __len__(self) -> int:
        return len(self.frames)

    def track_ids(self) -> np.ndarray:
        ids = [f.track_ids for f in self.frames if len(f)]
        return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)


def boxes_from_points(points: np.ndarray, pad: float = 0.0, min_size: float = 1.0) -> np.ndarray:
    """(n, 4) boxes around each instance's finite points, grown by ``pad`` pixels per side."""
    pts = np.asarray(points, dtype=np.float64)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(pts, axis=1), np.nanmax(pts, axis=1)
    half = np.maximum((hi - lo) / 2, min_size / 2) + pad
    centre = (lo + hi) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def sequence_lengths(sequences: Sequence[TrackSequence]) -> list[int]:
    return [len(s) for s in sequences]
