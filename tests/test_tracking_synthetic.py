"""The synthetic multi-object tracking generator: determinism, crossing tracks, layouts, ground truth."""

import time

import numpy as np
import pytest
import tifffile

from bioloop.data.synthetic_tracking import make_ctc_3d, make_tracking_dataset
from bioloop.errors import ConfigError


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_tracking_dataset(tmp_path_factory.mktemp("trk"), seed=3, enter_leave=True)


def test_same_seed_gives_the_same_dataset_and_files(tmp_path, ds):
    again = make_tracking_dataset(tmp_path, seed=3, enter_leave=True)
    np.testing.assert_array_equal(again.images, ds.images)
    np.testing.assert_array_equal(again.points, ds.points)
    np.testing.assert_array_equal(again.boxes, ds.boxes)
    for attr in ("ctc_track_path", "mot_txt"):
        assert open(getattr(again, attr)).read() == open(getattr(ds, attr)).read()
    other = make_tracking_dataset(tmp_path / "b", seed=4, layouts=())
    assert not np.allclose(np.nan_to_num(other.positions), np.nan_to_num(ds.positions))


def test_the_crossing_pair_swaps_places_and_overlaps(ds):
    a, b = ds.crossing_pair
    p = ds.positions
    assert np.linalg.norm(p[-1, a] - p[0, b]) < 10 and np.linalg.norm(p[-1, b] - p[0, a]) < 10
    assert np.linalg.norm(p[-1, a] - p[0, a]) > 40
    ba, bb = ds.boxes[:, a], ds.boxes[:, b]
    overlap = (np.minimum(ba[:, 2], bb[:, 2]) > np.maximum(ba[:, 0], bb[:, 0])) & \
              (np.minimum(ba[:, 3], bb[:, 3]) > np.maximum(ba[:, 1], bb[:, 1]))
    assert overlap.any()  # the bodies touch while passing: identity is ambiguous from position alone


def test_objects_keep_apart_and_the_newcomer_enters_and_leaves(ds):
    T, N = ds.visible.shape
    d = np.linalg.norm(ds.positions[:, :, None] - ds.positions[:, None], axis=-1)
    d[:, np.arange(N), np.arange(N)] = np.inf
    assert np.nanmin(d) >= 2 * ds.disc_radius + 1
    last = ds.visible[:, -1]
    frames = np.flatnonzero(last)
    assert not last[0] and not last[-1] and len(frames) == frames[-1] - frames[0] + 1
    assert ds.visible[:, :-1].all()
    np.testing.assert_array_equal(ds.ctc_table[-1], [N, frames[0], frames[-1], 0])
    assert np.isnan(ds.points[0, -1]).all()


def test_objects_look_alike_but_not_the_same(ds):
    """Mean colour of each body differs more between objects than over time for one object."""
    n = len(ds.ids) - 1  # the newcomer is out of view part of the time
    means = np.zeros((len(ds.images), n, 3))
    for t in range(len(ds.images)):
        for i in range(n):
            x, y = np.round(ds.positions[t, i]).astype(int)
            means[t, i] = ds.images[t, y - 2:y + 3, x - 2:x + 3].reshape(-1, 3).mean(0)
    per_obj = np.median(means, 0)
    spread = np.median(np.linalg.norm(means - per_obj, axis=-1))
    between = np.linalg.norm(per_obj[:, None] - per_obj[None], axis=-1)[~np.eye(n, dtype=bool)]
    assert np.median(between) > spread  # tell apart by looks...
    assert np.abs(per_obj - per_obj.mean(0)).max() < 60  # ...but from one palette


def test_files_of_every_layout(ds):
    assert ds.video_path.endswith(".mp4") and ds.slp_path.endswith(".slp")
    raw = tifffile.imread(f"{ds.ctc_raw_dir}/t000.tif")
    tra = tifffile.imread(f"{ds.ctc_tra_dir}/man_track000.tif")
    assert raw.shape == tra.shape == ds.image_size and raw.dtype == np.uint8 and tra.dtype == np.uint16
    x, y = np.round(ds.positions[0, 2]).astype(int)
    assert tra[y, x] == 3  # disc of object 2 carries label 3
    first = open(ds.mot_txt).readline().strip().split(",")
    assert first[0] == "1" and first[-3:] == ["-1", "-1", "-1"]
    assert (ds.ctc_table[:, 3] == 0).all()


def test_layout_subset_uint16_and_speed(tmp_path):
    make_tracking_dataset(tmp_path / "warm", n_frames=3, layouts=("slp", "ctc", "mot"))
    start = time.perf_counter()
    ds = make_tracking_dataset(tmp_path / "a", n_frames=50)
    assert time.perf_counter() - start < 2.0
    only = make_tracking_dataset(tmp_path / "b", n_frames=5, layouts=("ctc",), raw_dtype="uint16")
    assert only.slp_path is None and only.mot_txt is None and only.ctc_root is not None
    assert tifffile.imread(f"{only.ctc_raw_dir}/t000.tif").dtype == np.uint16
    assert ds.points.shape == (50, 5, 3, 2) and ds.boxes.shape == (50, 5, 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"layouts": ("slp", "coco")}, "unknown layouts"),
    ({"n_frames": 0}, "n_frames and n_objects must be >= 1"),
    ({"raw_dtype": "float32"}, "raw_dtype must be"),
    ({"n_objects": 60, "image_size": (40, 40)}, "cannot keep the objects apart"),
])
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_tracking_dataset(tmp_path, **kwargs)


def test_ctc_3d_sequence_with_a_division(tmp_path):
    d3 = make_ctc_3d(tmp_path, n_frames=6, n_objects=2)
    assert tifffile.imread(f"{d3.raw_dir}/t000.tif").shape == d3.shape
    np.testing.assert_array_equal(d3.table, [[1, 0, 2, 0], [2, 0, 5, 0], [3, 3, 5, 1], [4, 3, 5, 1]])
    lab = tifffile.imread(f"{d3.tra_dir}/man_track004.tif")
    x, y, z = np.round(d3.positions[4, 2]).astype(int)
    assert lab[z, y, x] == 3 and set(np.unique(lab)) == {0, 2, 3, 4}
    with pytest.raises(ConfigError, match="too many objects"):
        make_ctc_3d(tmp_path / "x", n_objects=20)


def test_crossing_dataset_equal_speed_colours_and_detection_gaps(tmp_path):
    from bioloop.data.synthetic_tracking import make_crossing_dataset
    from bioloop.tasks.tracking.io import read_slp

    ds = make_crossing_dataset(tmp_path / "a", n_frames=40, n_objects=4, seed=5)
    again = make_crossing_dataset(tmp_path / "b", n_frames=40, n_objects=4, seed=5)
    assert np.array_equal(ds.images, again.images) and np.array_equal(ds.visible, again.visible)
    # every detection gap ends: objects vanish and come back, and some gaps are long
    for i in range(4):
        seen = np.flatnonzero(ds.visible[:, i])
        assert len(seen) >= 10 and (np.diff(seen) > 1).any()
    assert not ds.visible.all()
    # one common speed (wall bounces keep it), so motion alone cannot tell the objects apart
    steps = []
    for i in range(4):
        for t in range(39):
            if ds.visible[t, i] and ds.visible[t + 1, i]:
                steps.append(np.linalg.norm(ds.positions[t + 1, i] - ds.positions[t, i]))
    assert 2.0 < np.median(steps) <= 2.5 + 1e-9
    # distinct colours: each object's mean pixel colour differs by far more than the noise
    seq = read_slp(ds.slp_path)[0]
    assert [len(f) for f in seq.frames] == ds.visible.sum(1).tolist()
    means = []
    for i in range(4):
        t = int(np.flatnonzero(ds.visible[:, i])[0])
        x, y = np.round(ds.positions[t, i]).astype(int)
        means.append(ds.images[t, y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0))
    gaps = [np.abs(a - b).max() for k, a in enumerate(means) for b in means[k + 1:]]
    assert min(gaps) > 60
