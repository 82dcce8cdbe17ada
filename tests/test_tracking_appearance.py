"""The learned tracker beats position alone where position is not enough.

``make_crossing_dataset``: 4 objects of clearly different colours move in straight lines at one speed
(2.5 px/frame) bouncing off the walls of a 64x96 arena, so their paths cross again and again; a
detection is dropped while two objects are within 12 px (an occlusion) and in random gaps of 1-4
frames, so tracks vanish at a crossing and reappear beyond it (about 60% of the instances are detected).
The baseline is what a position-only linker does: frame-to-frame Hungarian assignment of each
detection to the nearest last-seen centroid of the live tracks (gate 25 px, tracks kept 6 frames).
Past a crossing the nearest last position belongs to the other object, so it swaps.

The model: the tiny GTR of ``test_tracking_learns.py`` (timm test_resnet on 12 px crops, d_model 32,
one layer each), trained on three such videos, 4 epochs x 25 steps of Adam 3e-3 (about 13 s of CPU),
then tracking a held-out video (seed 100, 120 frames).

Measured on the held-out video (120 frames, 296 detections, 62% of the instances): baseline 20 ID
switches, IDF1 0.37, MOTA 0.93; trained with random_seed 0..3 (same data): switches 4, 4, 5, 0, IDF1
0.97, 0.97, 0.97, 1.00, MOTA 0.98-1.00 (on a 60-frame held-out video: baseline 11 / 0.46, trained 0-7
/ 0.82-1.00). The margins below (at most half the baseline's switches, IDF1 at least 0.4 higher) sit
well below the worst seed of that spread.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from bioloop import api
from bioloop.data.synthetic_tracking import make_crossing_dataset
from bioloop.tasks.tracking.io import read_slp
from bioloop.tasks.tracking.metrics import mot_metrics
from bioloop.tasks.tracking.types import Instances
from tests.fakes import write_small_tracking_config

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

pytestmark = pytest.mark.slow

_N_OBJECTS, _N_FRAMES, _HW = 4, 60, (64, 96)
SEQ_FRAMES = 120
_METRICS = ["num_switches", "idf1", "mota"]
_THREADS = 2 if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else 1


def centroid_baseline(frames: list[Instances], gate: float = 25.0, keep: int = 6) -> list[np.ndarray]:
    """Frame-to-frame Hungarian linking on centroid distance to each live track's last position."""
    last: dict[int, np.ndarray] = {}
    seen: dict[int, int] = {}
    out, next_id = [], 0
    for f in frames:
        ids = np.full(len(f), -1, np.int64)
        live = [k for k in last if f.frame - seen[k] - 1 <= keep]
        if live and len(f):
            d = np.linalg.norm(f.centroids[:, None] - np.stack([last[k] for k in live])[None], axis=-1)
            rows, cols = linear_sum_assignment(np.where(d > gate, 1e6, d))
            for i, j in zip(rows, cols):
                if d[i, j] <= gate:
                    ids[i] = live[j]
        for i in range(len(f)):
            if ids[i] < 0:
                ids[i], next_id = next_id, next_id + 1
            last[int(ids[i])], seen[int(ids[i])] = f.centroids[i], f.frame
        out.append(ids)
    return out


def test_the_baseline_links_a_plain_walk_and_swaps_after_an_occluded_crossing():
    """Golden: two objects on one line; in frames 2-3 they pass each other unseen, so at frame 4
    each is nearest to where the other was last seen."""
    def frame(t, xs):
        xy = np.array([[x, 10.0] for x in xs])
        return Instances(t, xy[:, None], np.c_[xy - 2, xy + 2], np.arange(len(xs)))

    plain = [frame(t, [10 + 2 * t, 40 + 2 * t]) for t in range(3)]
    assert [k.tolist() for k in centroid_baseline(plain)] == [[0, 1]] * 3
    # object 0 walks right from x=10, object 1 left from x=30, 4 px per frame; unseen in frames 2-3
    empty = [Instances(t, np.zeros((0, 1, 2)), np.zeros((0, 4)), []) for t in (2, 3)]
    crossing = [frame(0, [10, 30]), frame(1, [14, 26]), *empty, frame(4, [26, 14])]
    assert centroid_baseline(crossing)[-1].tolist() == [1, 0]  # the truth is [0, 1]: swapped


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(_THREADS)
    try:
        root = tmp_path_factory.mktemp("appearance")
        train = [make_crossing_dataset(root / f"train{s}", n_frames=_N_FRAMES, n_objects=_N_OBJECTS,
                                       image_size=_HW, seed=s) for s in (1, 2, 3)]
        test = make_crossing_dataset(root / "test", n_frames=SEQ_FRAMES, n_objects=_N_OBJECTS, image_size=_HW,
                                     seed=100)
        path = root / "cfg.py"
        write_small_tracking_config(path, [d.slp_path for d in train], _METRICS)
        cfg = api.load_config(str(path))
        assert api.train(cfg, quiet=True)["optimizer_steps"] == 100
        pred = api.predict(cfg, input=test.slp_path, output=str(root / "tracked.slp"), show_progress=False)
        trained = api.evaluate(cfg, prediction=str(pred), truth=test.slp_path)["metrics"]
        gt = read_slp(test.slp_path)[0]
        linked = centroid_baseline(gt.frames)
        base = mot_metrics(gt.frames, [Instances(f.frame, f.points, f.boxes, k) for f, k in zip(gt.frames, linked)],
                           _METRICS, match="iou")
        print(f"\nappearance: trained {trained}, baseline {base}")
        return {"trained": trained, "baseline": base, "detected": float(test.visible.mean())}
    finally:
        torch.set_num_threads(threads)


def test_position_alone_swaps_identities_here(scores):
    base = scores["baseline"]
    assert 0.4 < scores["detected"] < 0.8  # crossings and gaps hide a good share of the detections
    assert base["num_switches"] >= 12 and base["idf1"] <= 0.5  # measured: 20, 0.37


def test_the_trained_tracker_beats_the_centroid_baseline(scores):
    trained, base = scores["trained"], scores["baseline"]
    assert trained["num_switches"] <= base["num_switches"] / 2  # measured: 0-5 against 20
    assert trained["idf1"] >= base["idf1"] + 0.4  # measured: 0.97-1.00 against 0.37
    assert trained["idf1"] >= 0.8 and trained["mota"] >= base["mota"]
