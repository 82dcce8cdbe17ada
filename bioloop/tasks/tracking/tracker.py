"""Sliding-window association -> track ids (GTR/DREEM inference semantics).

The tracker never sees a model: it calls ``score_fn(window) -> logits (n_query, n_ref)`` once per
frame that has instances and references, where ``window`` is a :class:`Window`. Pipeline per frame:

1. references: each live track's most recent ``window_size - 1`` instances (so, without gaps,
   exactly the instances of the previous ``window_size - 1`` frames), sorted by frame;
2. logits -> probabilities with a softmax per reference frame over that frame's instances plus a
   background logit 0 (GTR ``softmax_asso``: a query matching nothing in a frame scores ~0 there);
3. ``decay_time``: each reference's probability times ``decay_time ** (t_query - t_ref - 1)``;
4. trajectory score (n_query, n_tracks) = sum of the track's reference probabilities;
5. ``iou`` (IoU between the query box and the track's last box in the window, as GTR):
   ``"mult"``: ``score + |iou - score| * iou``; ``"max"``: ``max(score, iou)``;
6. ``max_center_dist``: score -inf where the query centroid is farther (pixels) than this from the
   track's last centroid (such a pair is never assigned);
7. Hungarian assignment maximising the score; a pair is kept when ``score >= thresh`` with
   ``thresh = overlap_thresh * n_refs(track)`` if ``mult_thresh`` (GTR: a track seen k times in the
   window can score up to k) else ``overlap_thresh``. Rejected or unmatched queries start new tracks
   in query order. Once ``max_tracks`` live tracks exist, a query that would start a new track
   joins an existing one instead (GTR): its Hungarian track when it had one, else the track it
   scores best (several instances of a frame may then share a track). Only a query with no
   allowed track at all (every track beyond ``max_center_dist``, or none yet) stays -1; such
   instances are counted in ``Tracker.unassigned``.
8. ``max_gap``: a track missing for more than ``max_gap`` consecutive frames (by frame number)
   is terminated; its id is never reused.

Frame numbers must increase; a frame number not after the previous one starts a new video (the
state is reset). ``persistent_tracking=False`` also resets at the start of every ``track()`` call.

Association scores (``track(..., with_scores=True)``, written as SLEAP's ``tracking_score``): the
trajectory score of step 5-6 for the track an instance was assigned to, i.e. the number the
threshold of step 7 was compared with (a sum over the track's references of probabilities in
[0, 1], so up to ``window_size - 1``; the IoU reweighting can raise it). An instance that starts a
new track, or stays unassigned, scores 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from math import inf
from typing import Any

import attrs
import numpy as np
from scipy.optimize import linear_sum_assignment

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.types import Instances

_IOU_MODES = (None, "", "mult", "max")


@attrs.frozen(eq=False)
class Window:
    """What a score function sees for one query frame.

    ``query``: the newest frame's instances; ``query_feats``: its per-instance features (whatever
    the frames iterable supplied, first axis = instance) or None. ``ref_*`` describe the n_ref
    reference instances, sorted by frame: ``ref_frames`` (frame numbers), ``ref_index`` (index of
    the instance within its frame's ``Instances``), ``ref_track_ids`` (predicted ids),
    ``ref_boxes (n_ref, 4)``, ``ref_centroids (n_ref, 2)``, ``ref_points (n_ref, P, 2)`` and
    ``ref_feats``. With ``use_vis_feats=False`` both feature arrays are zeros: associate by
    position only.
    """

    query: Instances
    query_feats: Any
    ref_frames: np.ndarray
    ref_index: np.ndarray
    ref_track_ids: np.ndarray
    ref_boxes: np.ndarray
    ref_centroids: np.ndarray
    ref_points: np.ndarray
    ref_feats: Any
    use_vis_feats: bool

    @property
    def query_frame(self) -> int:
        return int(self.query.frame)

    @property
    def n_ref(self) -> int:
        return len(self.ref_frames)


ScoreFn = Callable[[Window], Any]


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _cat(parts: list):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if _is_torch(parts[0]):
        import torch

        return torch.cat(parts, dim=0)
    return np.concatenate([np.asarray(p) for p in parts], axis=0)


def _take(x, idx: np.ndarray):
    if x is None:
        return None
    if _is_torch(x):
        import torch

        return x[torch.as_tensor(idx, dtype=torch.long, device=x.device)]
    return x[idx]


def _to_numpy(x) -> np.ndarray:
    if _is_torch(x):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of boxes ``(x0, y0, x1, y1)``; 0 where a union is empty."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def frame_softmax(logits: np.ndarray, ref_frames: np.ndarray) -> np.ndarray:
    """Softmax per query over each reference frame's columns plus a background logit 0."""
    starts = np.flatnonzero(np.r_[True, ref_frames[1:] != ref_frames[:-1]])
    group = np.cumsum(np.r_[False, ref_frames[1:] != ref_frames[:-1]])
    m = np.maximum(np.maximum.reduceat(logits, starts, axis=1), 0.0)
    e = np.exp(logits - m[:, group])
    den = np.add.reduceat(e, starts, axis=1) + np.exp(-m)
    return e / den[:, group]


def _check(where: str, ok: bool, what: str, got, fix: str) -> None:
    if not ok:
        raise ConfigError.at(f"tracker.{where}", what, got=got, fix=fix)


@attrs.define(eq=False, slots=False)
class Tracker:
    """Assign track ids frame by frame from association logits (see the module docstring)."""

    window_size: int = 8
    use_vis_feats: bool = True
    overlap_thresh: float = 0.01
    mult_thresh: bool = True
    decay_time: float | None = None
    iou: str | None = None
    max_center_dist: float | None = None
    persistent_tracking: bool = False
    max_gap: float = inf
    max_tracks: float = inf

    def __attrs_post_init__(self):
        whole = isinstance(self.window_size, (int, np.integer))
        _check("window_size", whole and self.window_size >= 2,
               "must be an integer >= 2 (the query frame plus at least one reference frame)",
               self.window_size, "set window_size = 8 (GTR's default)")
        _check("iou", self.iou in _IOU_MODES or str(self.iou).lower() in _IOU_MODES,
               "must be None, '', 'mult' or 'max'", self.iou, "pick one of these")
        self.iou = str(self.iou).lower() if self.iou else None
        _check("decay_time", self.decay_time is None or self.decay_time >= 0,
               "must be None or a number >= 0", self.decay_time,
               "use e.g. 0.9 to down-weight older frames, or None to disable")
        _check("max_gap", self.max_gap >= 0, "must be >= 0", self.max_gap,
               "set the number of frames a track may be missing, or inf")
        _check("max_tracks", self.max_tracks >= 1, "must be >= 1", self.max_tracks,
               "set the largest number of tracks, or inf")
        _check("max_center_dist", self.max_center_dist is None or self.max_center_dist >= 0,
               "must be None or a distance in pixels >= 0", self.max_center_dist,
               "use None (or 0) to disable")
        self.unassigned = 0  # instances left without a track (see the module docstring), over all calls
        self.reset()

    def reset(self) -> None:
        """Forget every track: the next frame starts a new video with id 0."""
        self._r_frame = np.zeros(0, np.int64)
        self._r_index = np.zeros(0, np.int64)
        self._r_tid = np.zeros(0, np.int64)
        self._r_box = np.zeros((0, 4))
        self._r_cen = np.zeros((0, 2))
        self._r_pts: np.ndarray | None = None
        self._r_feat = None
        self._t_id = np.zeros(0, np.int64)  # live tracks
        self._t_last = np.zeros(0, np.int64)  # frame each live track was last seen
        self._next_id = 0
        self._last_frame: int | None = None

    def track(self, frames: Iterable, score_fn: ScoreFn, *, with_scores: bool = False):
        """Track ``frames`` (``Instances`` or ``(Instances, feats)``); ids per frame, -1: none.

        ``with_scores``: ``(ids per frame, association scores per frame)`` (module docstring)."""
        if not self.persistent_tracking:
            self.reset()
        ids, scores = [], []
        for item in frames:
            inst, feats = item if isinstance(item, tuple) else (item, None)
            k, s = self._step(inst, feats, score_fn)
            ids.append(k)
            scores.append(s)
        return (ids, scores) if with_scores else ids

    # ---------------------------------------------------------------- per frame
    def _step(self, inst: Instances, feats, score_fn: ScoreFn) -> tuple[np.ndarray, np.ndarray]:
        t = int(inst.frame)
        if self._last_frame is not None and t <= self._last_frame:
            self.reset()
        self._last_frame = t
        self._terminate(t)
        n_q = len(inst)
        ids, scores = np.full(n_q, -1, np.int64), np.zeros(n_q)
        if n_q == 0:
            return ids, scores
        if len(self._r_frame) == 0:
            for i in range(n_q):
                ids[i] = self._new_track()
        else:
            ids, scores = self._associate(inst, feats, score_fn)
        self.unassigned += int((ids < 0).sum())
        self._add(inst, feats, ids, t)
        return ids, scores

    def _terminate(self, t: int) -> None:
        alive = (t - self._t_last - 1) <= self.max_gap
        if alive.all():
            return
        self._t_id, self._t_last = self._t_id[alive], self._t_last[alive]
        self._keep_refs(np.isin(self._r_tid, self._t_id))

    def _new_track(self) -> int:
        if len(self._t_id) >= self.max_tracks:
            return -1
        tid = self._next_id
        self._next_id += 1
        self._t_id = np.r_[self._t_id, tid]
        self._t_last = np.r_[self._t_last, -1]  # set by _add
        return tid

    def _window(self, inst: Instances, feats) -> Window:
        ref_feats, q_feats = self._r_feat, feats
        if not self.use_vis_feats:
            ref_feats = None if ref_feats is None else ref_feats * 0
            q_feats = None if q_feats is None else q_feats * 0
        pts = self._r_pts if self._r_pts is not None else np.zeros((len(self._r_frame), 0, 2))
        return Window(query=inst, query_feats=q_feats, ref_frames=self._r_frame,
                      ref_index=self._r_index, ref_track_ids=self._r_tid, ref_boxes=self._r_box,
                      ref_centroids=self._r_cen, ref_points=pts, ref_feats=ref_feats,
                      use_vis_feats=self.use_vis_feats)

    def trajectory_scores(self, window: Window, logits) -> tuple[np.ndarray, ...]:
        """Scores (n_q, n_tracks), track ids (n_tracks,), refs per track (n_tracks,)."""
        n_q, n_ref = len(window.query), window.n_ref
        logits = _to_numpy(logits)
        if logits.shape != (n_q, n_ref):
            raise DataError.at("tracker score_fn", "returned association logits of the wrong shape",
                               got=logits.shape, fix=f"return (n_query, n_ref) = {(n_q, n_ref)}")
        probs = frame_softmax(logits, window.ref_frames)
        if self.decay_time:
            probs = probs * self.decay_time ** (window.query_frame - window.ref_frames - 1.0)[None]
        track_ids, col, counts = np.unique(window.ref_track_ids, return_inverse=True,
                                           return_counts=True)
        onehot = np.zeros((n_ref, len(track_ids)))
        onehot[np.arange(n_ref), col] = 1.0
        score = probs @ onehot
        last = np.zeros(len(track_ids), np.int64)
        np.maximum.at(last, col, np.arange(n_ref))  # refs are sorted by frame
        if self.iou:
            ious = pairwise_iou(window.query.boxes, window.ref_boxes[last])
            if self.iou == "mult":
                score = score + np.abs(ious - score) * ious
            else:
                score = np.maximum(score, ious)
        if self.max_center_dist:
            diff = window.query.centroids[:, None] - window.ref_centroids[last][None]
            d = np.linalg.norm(diff, axis=-1)
            score = np.where(d > self.max_center_dist, -np.inf, score)
        return score, track_ids, counts

    def _associate(self, inst: Instances, feats, score_fn: ScoreFn) -> tuple[np.ndarray, np.ndarray]:
        window = self._window(inst, feats)
        score, track_ids, counts = self.trajectory_scores(window, score_fn(window))
        n_q = len(inst)
        allowed = np.isfinite(score)
        finite = np.where(allowed, score, 0.0)
        big = (np.abs(finite).max() + 1.0) * (n_q + len(track_ids) + 1)
        rows, cols = linear_sum_assignment(np.where(allowed, -finite, big))
        ok = allowed[rows, cols]
        rows, cols = rows[ok], cols[ok]
        thresh = self.overlap_thresh * (counts[cols] if self.mult_thresh else 1.0)
        passed = score[rows, cols] >= thresh
        ids, scores = np.full(n_q, -1, np.int64), np.zeros(n_q)
        ids[rows[passed]] = track_ids[cols[passed]]
        scores[rows[passed]] = score[rows[passed], cols[passed]]
        fallback = np.full(n_q, -1, np.int64)  # column of the track each query joins once tracks are full
        fallback[rows] = cols
        best = np.argmax(np.where(allowed, score, -np.inf), axis=1)
        no_pair = (fallback < 0) & allowed.any(axis=1)
        fallback[no_pair] = best[no_pair]
        for i in np.flatnonzero(ids < 0):  # only the queries without a kept match
            if len(self._t_id) < self.max_tracks:
                ids[i] = self._new_track()
            elif fallback[i] >= 0:
                ids[i], scores[i] = track_ids[fallback[i]], score[i, fallback[i]]
        return ids, scores

    # ---------------------------------------------------------------- state
    def _add(self, inst: Instances, feats, ids: np.ndarray, t: int) -> None:
        keep = ids >= 0
        if not keep.any():
            return
        idx = np.flatnonzero(keep)
        pts = inst.points[idx] if inst.points.size else np.zeros((len(idx), 0, 2))
        if self._r_pts is not None and len(self._r_pts) and self._r_pts.shape[1:] != pts.shape[1:]:
            raise DataError.at(f"frame {t}", "instances have a different number of points than "
                               "earlier frames", got=pts.shape[1:],
                               fix="give every frame the same skeleton")
        if (feats is None) != (self._r_feat is None) and len(self._r_frame):
            raise DataError.at(f"frame {t}", "features were given for some frames but not others",
                               got=type(feats).__name__,
                               fix="give features for every frame or none")
        self._r_frame = np.r_[self._r_frame, np.full(len(idx), t, np.int64)]
        self._r_index = np.r_[self._r_index, idx]
        self._r_tid = np.r_[self._r_tid, ids[idx]]
        self._r_box = np.concatenate([self._r_box, inst.boxes[idx]])
        self._r_cen = np.concatenate([self._r_cen, inst.centroids[idx]])
        old = self._r_pts
        self._r_pts = pts if old is None or not len(old) else np.concatenate([old, pts])
        self._r_feat = None if feats is None else _cat([self._r_feat, _take(feats, idx)])
        self._t_last[np.isin(self._t_id, ids[idx])] = t
        # keep each track's newest window_size - 1 instances
        order = np.lexsort((-self._r_frame, self._r_tid))
        tid_sorted = self._r_tid[order]
        first = np.r_[True, tid_sorted[1:] != tid_sorted[:-1]]
        starts = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order)) - starts
        self._keep_refs(rank < self.window_size - 1)

    def _keep_refs(self, mask: np.ndarray) -> None:
        if mask.all():
            return
        idx = np.flatnonzero(mask)
        self._r_frame, self._r_index = self._r_frame[idx], self._r_index[idx]
        self._r_tid = self._r_tid[idx]
        self._r_box, self._r_cen = self._r_box[idx], self._r_cen[idx]
        self._r_pts = None if self._r_pts is None else self._r_pts[idx]
        self._r_feat = _take(self._r_feat, idx)
