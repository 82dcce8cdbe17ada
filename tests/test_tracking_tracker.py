"""Tracker: GTR sliding-window association -> ids, each setting changing an outcome."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.tracker import Tracker, Window, frame_softmax, pairwise_iou
from bioloop.tasks.tracking.types import Instances


def _frame(t, xy, ids=None, half=3.0) -> Instances:
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    ids = np.arange(len(xy)) if ids is None else np.asarray(ids)
    boxes = np.concatenate([xy - half, xy + half], axis=1)
    return Instances(frame=t, points=xy[:, None, :], boxes=boxes, track_ids=ids)


def _crossing_video(n_frames=40, seed=0) -> list[Instances]:
    """Four animals: two pairs whose straight paths cross (an X and a head-on pass 4 px apart)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames)[:, None]
    paths = [np.c_[10 + 3 * t, 10 + 3 * t], np.c_[13 + 3 * t, 130 - 3 * t],
             np.c_[10 + 3 * t, np.full_like(t, 200)], np.c_[130 - 3 * t, np.full_like(t, 204)]]
    frames = []
    for k in range(n_frames):
        order = rng.permutation(4)  # instance order within a frame carries no identity
        xy = np.stack([paths[j][k] for j in order]).astype(float)
        frames.append(_frame(k, xy, ids=order))
    return frames


def _perfect(video, miss=0.0):
    by_frame = {f.frame: f for f in video}

    def score_fn(w: Window):
        ref_gt = np.array([by_frame[f].track_ids[i] for f, i in zip(w.ref_frames, w.ref_index)])
        return np.where(w.query.track_ids[:, None] == ref_gt[None], 10.0, miss)
    return score_fn


def _motion(w: Window):
    """Position-only logits: distance to each reference moved on at its track's last velocity."""
    pred = w.ref_centroids.copy()
    for k in np.unique(w.ref_track_ids):
        rows = np.flatnonzero(w.ref_track_ids == k)
        if len(rows) > 1:
            a, b = rows[-2], rows[-1]
            v = (w.ref_centroids[b] - w.ref_centroids[a]) / (w.ref_frames[b] - w.ref_frames[a])
            pred[rows] += v * (w.query_frame - w.ref_frames[rows])[:, None]
    d = np.linalg.norm(w.query.centroids[:, None] - pred[None], axis=-1)
    return 5.0 - d


def _position(w: Window):
    d = np.linalg.norm(w.query.centroids[:, None] - w.ref_centroids[None], axis=-1)
    return 5.0 - d / 2.0


def _consistent(video, pred) -> bool:
    """Every GT id maps to one predicted id and back (zero switches)."""
    pairs = {(int(g), int(p)) for f, ids in zip(video, pred) for g, p in zip(f.track_ids, ids)}
    return len(pairs) == len({g for g, _ in pairs}) == len({p for _, p in pairs})


def test_perfect_scores_give_zero_switches():
    video = _crossing_video()
    pred = Tracker(window_size=8).track(video, _perfect(video))
    assert _consistent(video, pred)
    assert sorted(np.unique(np.concatenate(pred))) == [0, 1, 2, 3]
    from bioloop.tasks.tracking.metrics import mot_metrics

    tracked = [Instances(frame=f.frame, points=f.points, boxes=f.boxes, track_ids=p)
               for f, p in zip(video, pred)]
    assert mot_metrics(video, tracked, metrics=("num_switches", "mota")) == {"num_switches": 0.0,
                                                                             "mota": 1.0}


def test_crossing_tracks_keep_identities_from_positions_only():
    video = _crossing_video(seed=1)
    pred = Tracker(window_size=4, use_vis_feats=False).track(video, _motion)
    assert _consistent(video, pred)
    assert not _consistent(video, Tracker(window_size=4).track(video, _position))  # it is hard


def test_use_vis_feats_false_zeroes_features():
    video = [_frame(t, [[10 + t, 10], [60 - t, 10]]) for t in range(3)]
    seen = []

    def score_fn(w):
        seen.append((w.use_vis_feats, np.abs(w.query_feats).sum(), np.abs(w.ref_feats).sum()))
        return _position(w)

    feats = [(f, np.ones((2, 5))) for f in video]
    Tracker(use_vis_feats=False).track(feats, score_fn)
    assert seen == [(False, 0.0, 0.0)] * 2
    seen.clear()
    Tracker(use_vis_feats=True).track(feats, score_fn)
    assert seen == [(True, 10.0, 10.0), (True, 10.0, 20.0)]


def test_torch_features_are_kept_per_reference():
    video = [_frame(t, [[10, 10], [60, 10]]) for t in range(4)]
    got = []

    def score_fn(w):
        got.append((type(w.ref_feats), w.ref_feats[:, 0].tolist()))
        return _position(w)

    Tracker(window_size=3).track([(f, torch.full((2, 3), float(f.frame))) for f in video], score_fn)
    assert got[-1] == (torch.Tensor, [1.0, 1.0, 2.0, 2.0])  # frames 1 and 2: window_size - 1


def test_frame_softmax_golden():
    logits = np.array([[0.0, math.log(3.0), 0.0]])
    probs = frame_softmax(logits, np.array([4, 4, 5]))
    np.testing.assert_allclose(probs, [[1 / 5, 3 / 5, 1 / 2]])


def test_pairwise_iou_golden():
    np.testing.assert_allclose(pairwise_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]),
                               [[1 / 3, 0.0]])


def _scripted(table):
    """score_fn from {(query_frame, ref_frame): logit}."""
    def score_fn(w):
        row = np.array([table[(w.query_frame, int(f))] for f in w.ref_frames], float)
        return np.repeat(row[None], len(w.query), axis=0)
    return score_fn


def test_decay_time_changes_assignment():
    # track 0 seen at frames 0-2, track 1 born at frame 4; frame 5's query matches both:
    # without decay 3 * 0.5 = 1.5 > 0.9; with decay 0.5: 0.5 * (1/16 + 1/8 + 1/4) = 0.22 < 0.9
    video = [_frame(t, [[10, 10]]) for t in (0, 1, 2)]
    video += [_frame(4, [[90, 90]]), _frame(5, [[50, 50]])]
    table = {(1, 0): 5.0, (2, 0): 5.0, (2, 1): 5.0}
    table |= {(4, f): -10.0 for f in (0, 1, 2)}
    table |= {(5, f): 0.0 for f in (0, 1, 2)} | {(5, 4): math.log(9.0)}
    plain = Tracker(window_size=8).track(video, _scripted(table))
    decayed = Tracker(window_size=8, decay_time=0.5).track(video, _scripted(table))
    assert [int(p[0]) for p in plain] == [0, 0, 0, 1, 0]
    assert [int(p[0]) for p in decayed] == [0, 0, 0, 1, 1]


def test_iou_reweighting_breaks_a_tie_and_mult_golden():
    video = [_frame(0, [[5, 5], [55, 5]], half=5), _frame(1, [[56, 5], [6, 5]], half=5)]
    flat = lambda w: np.zeros((len(w.query), w.n_ref))  # noqa: E731  every pair scores 1/3
    assert Tracker().track(video, flat)[1].tolist() == [0, 1]  # tie -> by index: wrong
    assert Tracker(iou="max").track(video, flat)[1].tolist() == [1, 0]
    assert Tracker(iou="MULT").track(video, flat)[1].tolist() == [1, 0]
    tr = Tracker(iou="mult")
    q = _frame(1, [[10, 5]], half=5)
    w = Window(query=q, query_feats=None, ref_frames=np.array([0]), ref_index=np.array([0]),
               ref_track_ids=np.array([7]), ref_boxes=np.array([[0.0, 0, 10, 10]]),
               ref_centroids=np.array([[5.0, 5]]), ref_points=np.zeros((1, 0, 2)), ref_feats=None,
               use_vis_feats=True)
    score, ids, counts = tr.trajectory_scores(w, np.zeros((1, 1)))
    # s = 0.5 (one ref, logit 0 vs background), iou = 1/3: s + |iou - s| * iou
    np.testing.assert_allclose(score, [[0.5 + (1 / 6) * (1 / 3)]])
    assert ids.tolist() == [7] and counts.tolist() == [1]


def test_max_center_dist_forbids_far_tracks():
    video = [_frame(0, [[10, 10]], ids=[0]), _frame(1, [[100, 10]], ids=[0])]
    assert Tracker().track(video, _perfect(video))[1].tolist() == [0]
    assert Tracker(max_center_dist=20).track(video, _perfect(video))[1].tolist() == [1]


def test_max_gap_terminates_tracks():
    video = [_frame(t, [[10, 10]], ids=[0]) for t in (0, 1, 2)] + [_frame(6, [[10, 10]], ids=[0])]
    assert Tracker().track(video, _perfect(video))[-1].tolist() == [0]  # 3 missing frames, no limit
    assert Tracker(max_gap=3).track(video, _perfect(video))[-1].tolist() == [0]
    assert Tracker(max_gap=2).track(video, _perfect(video))[-1].tolist() == [1]


def test_max_tracks_assigns_instead_of_creating():
    # animal 0 leaves after frame 2, a new animal appears far away at frame 3
    video = [_frame(t, [[10, 10], [50, 10]], ids=[0, 1]) for t in range(3)]
    video.append(_frame(3, [[50, 10], [200, 200]], ids=[1, 2]))
    score_fn = _perfect(video, miss=-10.0)
    assert Tracker().track(video, score_fn)[-1].tolist() == [1, 2]
    assert Tracker(max_tracks=2).track(video, score_fn)[-1].tolist() == [1, 0]
    tracker = Tracker(max_tracks=2)
    first = tracker.track([_frame(0, [[0, 0], [9, 9], [30, 30]])], _position)
    assert first[0].tolist() == [0, 1, -1]  # no track to join yet
    assert tracker.unassigned == 1


def test_max_tracks_reached_every_instance_joins_its_best_track():
    """10 animals, max_tracks=5: from frame 1 on nobody stays untracked (GTR: join the best track)."""
    xy = np.c_[np.arange(10) * 30.0, np.zeros(10)]
    video = [_frame(t, xy + [0, t]) for t in range(4)]
    tracker = Tracker(max_tracks=5)
    pred = tracker.track(video, _position)
    assert pred[0].tolist() == [0, 1, 2, 3, 4, -1, -1, -1, -1, -1]
    for ids in pred[1:]:
        assert (ids >= 0).all() and set(ids.tolist()) <= {0, 1, 2, 3, 4}
        assert ids[:5].tolist() == [0, 1, 2, 3, 4]  # the tracked five keep their tracks
        assert ids[5:].tolist() == [4, 4, 4, 4, 4]  # the nearest track, by position
    assert tracker.unassigned == 5
    # a query no track may take (max_center_dist) is the only one left out, and is counted
    far = Tracker(max_tracks=2, max_center_dist=20)
    got = far.track([_frame(0, [[0, 0], [50, 0]]), _frame(1, [[0, 1], [50, 1], [300, 300]])], _position)
    assert got[1].tolist() == [0, 1, -1] and far.unassigned == 1


def test_association_scores_are_the_trajectory_scores_of_the_assignment():
    """Hand-checked: one reference per track, logits 10 (same animal) or -10, no IoU / decay."""
    video = [_frame(t, [[10, 10], [50, 10]], ids=[0, 1]) for t in range(3)]
    ids, scores = Tracker(window_size=3).track(video, _perfect(video, miss=-10.0), with_scores=True)
    assert scores[0].tolist() == [0.0, 0.0]  # new tracks: no association
    # frame 1: softmax over (10, -10, background 0) -> e^10 / (e^10 + e^-10 + 1)
    p = math.exp(10) / (math.exp(10) + math.exp(-10) + 1)
    np.testing.assert_allclose(scores[1], [p, p])
    np.testing.assert_allclose(scores[2], [2 * p, 2 * p])  # two reference frames per track
    assert [k.tolist() for k in ids] == [[0, 1]] * 3
    # a joined track (tracks full) reports the score it joined with: here the other track's q
    joined = Tracker(max_tracks=1).track([_frame(0, [[10, 10]], ids=[0]),
                                          _frame(1, [[10, 10], [50, 10]], ids=[0, 1])],
                                         _perfect(video, miss=-10.0), with_scores=True)
    assert joined[0][1].tolist() == [0, 0]
    np.testing.assert_allclose(joined[1][1], [math.exp(10) / (math.exp(10) + 1), 1 / (math.exp(10) + 1)])


def test_mult_thresh_scales_threshold_by_track_length():
    video = [_frame(t, [[10, 10]]) for t in range(4)]
    table = {(1, 0): 5.0, (2, 0): 5.0, (2, 1): 5.0}
    table |= {(3, f): math.log(0.25) for f in (0, 1, 2)}  # p = 0.2 per frame, 0.6 in all
    plain = Tracker(overlap_thresh=0.3, mult_thresh=False).track(video, _scripted(table))
    scaled = Tracker(overlap_thresh=0.3, mult_thresh=True).track(video, _scripted(table))
    assert plain[3].tolist() == [0]  # 0.6 >= 0.3
    assert scaled[3].tolist() == [1]  # 0.6 < 0.3 * 3 refs: a new track


def test_persistent_tracking_carries_ids_across_chunks():
    a = [_frame(t, [[10, 10], [60, 60]], ids=[0, 1]) for t in range(3)]
    b = [_frame(t, [[60, 60], [10, 10]], ids=[1, 0]) for t in range(3, 6)]
    tr = Tracker(persistent_tracking=True)
    tr.track(a, _position)
    assert tr.track(b, _position)[0].tolist() == [1, 0]
    tr = Tracker(persistent_tracking=False)
    tr.track(a, _position)
    assert tr.track(b, _position)[0].tolist() == [0, 1]
    tr = Tracker(persistent_tracking=True)
    tr.track(a, _position)
    tr.reset()
    assert tr.track(b, _position)[0].tolist() == [0, 1]


def test_frame_number_going_back_starts_a_new_video():
    video = [_frame(0, [[0, 0]]), _frame(1, [[0, 0], [40, 40]]), _frame(0, [[40, 40]])]
    assert [p.tolist() for p in Tracker().track(video, _position)] == [[0], [0, 1], [0]]


def test_deterministic_and_empty_frames():
    video = _crossing_video(seed=3)
    video[5] = _frame(5, np.zeros((0, 2)), ids=np.zeros(0))
    p1 = Tracker(window_size=3).track(video, _position)
    p2 = Tracker(window_size=3).track(video, _position)
    assert all(np.array_equal(a, b) for a, b in zip(p1, p2)) and len(p1[5]) == 0


@pytest.mark.parametrize("kwargs, key", [
    ({"window_size": 1}, "tracker.window_size"), ({"iou": "add"}, "tracker.iou"),
    ({"decay_time": -1}, "tracker.decay_time"), ({"max_gap": -1}, "tracker.max_gap"),
    ({"max_tracks": 0}, "tracker.max_tracks"), ({"max_center_dist": -5}, "tracker.max_center_dist"),
])
def test_bad_settings_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        Tracker(**kwargs)


def test_score_fn_of_wrong_shape_is_reported():
    video = [_frame(0, [[0, 0]]), _frame(1, [[0, 0]])]
    with pytest.raises(DataError, match=r"score_fn: returned association logits of the wrong"):
        Tracker().track(video, lambda w: np.zeros((3, 3)))


def test_inconsistent_inputs_are_reported():
    video = [(_frame(0, [[0, 0]]), np.ones((1, 2))), _frame(1, [[0, 0]])]
    with pytest.raises(DataError, match="features were given for some frames"):
        Tracker().track(video, _position)
    two = Instances(frame=1, points=np.zeros((1, 2, 2)), boxes=[[0, 0, 1, 1]], track_ids=[0])
    with pytest.raises(DataError, match="different number of points"):
        Tracker().track([_frame(0, [[0, 0]]), two], _position)
