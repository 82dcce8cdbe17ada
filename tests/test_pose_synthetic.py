"""The synthetic pose dataset: files other tools read (DLC CSV, mp4, .slp), exact keypoints, determinism."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pandas as pd
import pytest
import sleap_io as sio

from bioloop.data import synthetic_pose as sp
from bioloop.data.synthetic_pose import (EDGES, FLIP_PAIRS, KEYPOINT_COLOURS, SKELETON_NAMES, flip_permutation,
                                         make_pose_dataset)
from bioloop.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose")
    start = time.process_time()
    ds = make_pose_dataset(root)  # defaults
    return ds, time.process_time() - start


@pytest.fixture(scope="module")
def ds(timed):
    return timed[0]


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    return make_pose_dataset(tmp_path_factory.mktemp("pose_multi"), n_frames=20, n_animals=3, n_videos=1, seed=3)


def test_default_generation_is_fast(timed):
    assert timed[1] < 3.0  # about 1 CPU second (incl. importing sleap-io) on a laptop


def test_layout_and_shapes(ds):
    root = ds.root
    assert ds.video_names == ("video0", "video1")
    assert ds.image_relpaths[0] == "labeled-data/video0/img0000.png"
    assert ds.image_relpaths[60] == "labeled-data/video1/img0000.png"
    assert ds.keypoints.shape == (120, 1, 8, 2) and ds.boxes.shape == (120, 1, 4)
    assert ds.images.shape == (120, 128, 160, 3) and ds.images.dtype == np.uint8
    assert ds.video_paths[1] == f"{root}/videos/video1.mp4"
    assert [v.shape for v in ds.video_keypoints] == [(60, 1, 8, 2)] * 2
    png = cv2.imread(ds.image_paths[7])[..., ::-1]  # RGB on disk as in memory
    np.testing.assert_array_equal(png, ds.images[7])
    assert ds.keypoint_names == SKELETON_NAMES and len(SKELETON_NAMES) == 8
    assert set(KEYPOINT_COLOURS) == set(SKELETON_NAMES)
    assert {n for e in EDGES for n in e} == set(SKELETON_NAMES)


def test_some_keypoints_missing_but_most_visible(ds):
    missing = np.isnan(ds.keypoints[..., 0])
    assert np.array_equal(missing, np.isnan(ds.keypoints[..., 1]))
    assert 0.01 < missing.mean() < 0.15  # occasionally hidden by the post or out of frame


def test_same_seed_same_data_other_seed_differs(tmp_path):
    a = make_pose_dataset(tmp_path / "a", n_frames=6, n_videos=1, seed=5, video=False)
    b = make_pose_dataset(tmp_path / "b", n_frames=6, n_videos=1, seed=5, video=False)
    c = make_pose_dataset(tmp_path / "c", n_frames=6, n_videos=1, seed=6, video=False)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert (tmp_path / "a/CollectedData.csv").read_text() == (tmp_path / "b/CollectedData.csv").read_text()
    assert not np.allclose(a.keypoints, c.keypoints, equal_nan=True)
    assert not (tmp_path / "a/videos").exists()


def test_csv_reads_with_pandas_and_matches(ds):
    df = pd.read_csv(ds.csv_path, header=[0, 1, 2], index_col=0)
    assert list(df.index) == list(ds.image_relpaths)
    assert df.columns.get_level_values(0).unique().tolist() == ["bioloop"]
    assert df.columns.get_level_values(1).unique().tolist() == list(SKELETON_NAMES)
    assert df.columns.get_level_values(2).tolist()[:4] == ["x", "y", "x", "y"]
    values = df.to_numpy(dtype=float).reshape(len(df), 8, 2)
    np.testing.assert_array_equal(values, ds.keypoints[:, 0])  # exact, NaN where missing
    first_lines = open(ds.csv_path).read().splitlines()
    assert [line.split(",")[0] for line in first_lines[:3]] == ["scorer", "bodyparts", "coords"]
    assert any(",," in line for line in first_lines[3:])  # missing points are empty cells


def test_mp4_holds_every_frame_close_to_the_pngs(ds):
    cap = cv2.VideoCapture(ds.video_paths[0])
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    cap.release()
    assert len(frames) == 60 and frames[0].shape == (128, 160, 3)
    for i in (0, 31, 59):
        diff = np.abs(frames[i].astype(float) - ds.images[i].astype(float))
        assert diff.mean() < 8.0  # lossy codec, same picture
    other = np.abs(frames[0].astype(float) - ds.images[31].astype(float)).mean()
    assert other > np.abs(frames[31].astype(float) - ds.images[31].astype(float)).mean()


def test_slp_round_trip(ds):
    labels = sio.load_slp(ds.slp_path, open_videos=False)
    skeleton = labels.skeletons[0]
    assert skeleton.node_names == list(SKELETON_NAMES)
    assert {(e.source.name, e.destination.name) for e in skeleton.edges} == set(EDGES)
    assert {frozenset(n.name for n in s.nodes) for s in skeleton.symmetries} == {frozenset(p) for p in FLIP_PAIRS}
    assert [v.filename for v in labels.videos] == list(ds.video_paths)
    assert len(labels.labeled_frames) == 120
    by_key = {(labels.videos.index(lf.video), lf.frame_idx): lf for lf in labels.labeled_frames}
    for n in range(len(ds.keypoints)):
        lf = by_key[(int(ds.video_index[n]), int(ds.frame_index[n]))]
        np.testing.assert_allclose(lf.instances[0].numpy(), ds.keypoints[n, 0], rtol=0, atol=1e-4)


def test_keypoints_sit_on_their_coloured_markers(ds):
    checked = 0
    for img, kps in zip(ds.images, ds.keypoints[:, 0]):
        for name, (x, y) in zip(SKELETON_NAMES, kps):
            if math.isnan(x):
                continue
            pixel = img[round(y), round(x)].astype(float)
            assert np.abs(pixel - KEYPOINT_COLOURS[name]).max() < 16, (name, x, y, pixel)
            checked += 1
    assert checked > 800


def test_marker_coverage_is_centred_on_the_subpixel_keypoint():
    ys, xs = np.mgrid[0:20, 0:20].astype(float)
    for centre in [(9.3, 10.7), (8.5, 8.5), (10.02, 9.91)]:
        cov = sp._coverage(("disk", (centre, 2.2), None), xs, ys)
        assert cov[round(centre[1]), round(centre[0])] == 1.0 and cov.min() == 0.0
        centroid = (float((cov * xs).sum() / cov.sum()), float((cov * ys).sum() / cov.sum()))
        assert centroid == pytest.approx(centre, abs=0.02)  # sampling error of the 1 px ramp


def test_left_right_names_follow_the_animal_and_flip_swaps_them(ds):
    perm = flip_permutation(SKELETON_NAMES, FLIP_PAIRS)
    assert [SKELETON_NAMES[i] for i in perm][:5] == ["nose", "ear_right", "ear_left", "paw_right", "paw_left"]
    np.testing.assert_array_equal(ds.flip_index, perm)
    kp = ds.video_keypoints[0][:, 0]
    names = list(SKELETON_NAMES)

    def side(k, part):  # < 0: the animal's left (seen from above, image y down)
        fwd = k[:, names.index("nose")] - k[:, names.index("spine")]
        off = k[:, names.index(part)] - k[:, names.index("spine")]
        return fwd[:, 0] * off[:, 1] - fwd[:, 1] * off[:, 0]

    ok = ~np.isnan(kp).any(axis=(1, 2))
    assert ok.sum() > 20
    assert (side(kp[ok], "ear_left") < 0).all() and (side(kp[ok], "ear_right") > 0).all()
    assert (side(kp[ok], "paw_left") < 0).all() and (side(kp[ok], "paw_right") > 0).all()
    flipped = kp[ok].copy()
    flipped[..., 0] = 159 - flipped[..., 0]  # horizontal flip of a 160 px wide frame
    flipped = flipped[:, perm]
    assert (side(flipped, "ear_left") < 0).all() and (side(flipped, "paw_right") > 0).all()


def test_boxes_contain_the_visible_keypoints(ds, multi):
    for d in (ds, multi):
        for box, kps in zip(d.boxes.reshape(-1, 4), d.keypoints.reshape(-1, 8, 2)):
            vis = kps[~np.isnan(kps[:, 0])]
            if len(vis) == 0:
                continue
            assert (vis[:, 0] >= box[0]).all() and (vis[:, 0] <= box[2]).all()
            assert (vis[:, 1] >= box[1]).all() and (vis[:, 1] <= box[3]).all()
            assert box[0] >= -0.5 and box[2] <= 159.5 and box[1] >= -0.5 and box[3] <= 127.5


def test_multi_animal_csv_has_individuals_row(multi):
    assert multi.keypoints.shape == (20, 3, 8, 2) and multi.boxes.shape == (20, 3, 4)
    assert open(multi.csv_path).read().splitlines()[1].startswith("individuals,animal0,animal0,")
    df = pd.read_csv(multi.csv_path, header=[0, 1, 2, 3], index_col=0)
    assert df.columns.get_level_values(0).unique().tolist() == ["bioloop"]
    assert df.columns.get_level_values(1).unique().tolist() == ["animal0", "animal1", "animal2"]
    assert df.columns.get_level_values(2).unique().tolist() == list(SKELETON_NAMES)
    np.testing.assert_array_equal(df.to_numpy(dtype=float).reshape(20, 3, 8, 2), multi.keypoints)
    labels = sio.load_slp(multi.slp_path, open_videos=False)
    assert [t.name for t in labels.tracks] == ["animal0", "animal1", "animal2"]
    for lf, kps in zip(labels.labeled_frames, multi.keypoints):
        for inst in lf.instances:
            i = int(inst.track.name[-1])
            np.testing.assert_allclose(inst.numpy(), kps[i], atol=1e-4)


def test_label_every_labels_a_subset_of_video_frames(tmp_path):
    d = make_pose_dataset(tmp_path, n_frames=10, n_videos=1, label_every=4)
    assert d.image_relpaths == tuple(f"labeled-data/video0/img{t:04d}.png" for t in (0, 4, 8))
    np.testing.assert_array_equal(d.keypoints, d.video_keypoints[0][[0, 4, 8]])
    cap = cv2.VideoCapture(d.video_paths[0])
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    cap.release()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_frames": 0}, "make_pose_dataset(n_frames=...): n_frames must be an integer >= 1 (got 0)"),
    ({"n_animals": 1.5}, "make_pose_dataset(n_animals=...): n_animals must be an integer >= 1 (got 1.5)"),
    ({"image_size": 64}, "make_pose_dataset(image_size=...): image_size must be (height, width) (got 64)"),
    ({"image_size": (64, 63)}, "make_pose_dataset(image_size=...): image_size must be even and at least 32 per "
                               "side (got (64, 63)); use e.g. (128, 160)"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as err:
        make_pose_dataset(tmp_path, **kwargs)
    assert str(err.value) == message


def test_unwritable_outputs(tmp_path):
    (tmp_path / "a/labeled-data/video0/img0000.png").mkdir(parents=True)
    with pytest.raises(DataError, match="img0000.png: could not write the PNG frame; check the folder"):
        make_pose_dataset(tmp_path / "a", n_frames=2, n_videos=1)
    (tmp_path / "b/videos/video0.mp4").mkdir(parents=True)
    with pytest.raises(DataError, match=r"video0.mp4: OpenCV cannot open an mp4v video writer; .* video=False"):
        make_pose_dataset(tmp_path / "b", n_frames=2, n_videos=1)
