"""Train/val/test splits of pose frames: grouped by video, seeded, written to the run folder."""

import numpy as np
import pytest

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.pose.labels import PoseLabels
from bioloop.tasks.pose.split import read_split, split_frames, write_split


def _labels(sizes, video=False):
    """Frames in len(sizes) image folders (or videos) of the given sizes."""
    paths, videos, fidx = [], [], []
    for g, size in enumerate(sizes):
        for t in range(size):
            paths.append("" if video else f"/data/labeled-data/vid{g}/img{t:04d}.png")
            videos.append(f"/data/videos/vid{g}.mp4" if video else "")
            fidx.append(t)
    n = len(paths)
    return PoseLabels(keypoints=np.zeros((n, 1, 2, 2)), keypoint_names=["a", "b"], image_paths=paths,
                      video_paths=videos, frame_indices=np.array(fidx))


def _group_of(labels):
    return np.array(labels.groups())


@pytest.mark.parametrize("video", [False, True])
def test_no_group_straddles_splits_and_every_frame_is_used(video):
    labels = _labels([7, 3, 12, 5, 9, 4, 6, 8, 2, 10, 5, 9], video=video)
    split = split_frames(labels, train_prob=0.7, val_prob=0.15, seed=3)
    assert split.grouped and split.note == ""
    groups = _group_of(labels)
    seen = {}
    for key in ("train", "val", "test"):
        assert len(split[key]) > 0
        for g in set(groups[split[key]]):
            assert seen.setdefault(g, key) == key, f"{g} is in {seen[g]} and {key}"
    everything = np.concatenate([split["train"], split["val"], split["test"]])
    assert sorted(everything) == list(range(labels.num_frames))
    n = labels.num_frames
    assert abs(len(split["train"]) - 0.7 * n) <= 12  # within one group of the target


def test_split_is_deterministic_and_depends_on_seed():
    labels = _labels([4] * 20)
    a = split_frames(labels, seed=0)
    b = split_frames(labels, seed=0)
    c = split_frames(labels, seed=1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == np.int64
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_golden_counts_on_equal_groups():
    split = split_frames(_labels([1] * 10), train_prob=0.8, val_prob=0.1, seed=0)
    assert [len(split[k]) for k in ("train", "val", "test")] == [8, 1, 1]


def test_train_frames_fraction_and_count_subsample_the_train_split():
    labels = _labels([5] * 20)
    full = split_frames(labels, seed=2)
    half = split_frames(labels, seed=2, train_frames=0.5)
    ten = split_frames(labels, seed=2, train_frames=10)
    every = split_frames(labels, seed=2, train_frames=1)
    assert len(half["train"]) == round(0.5 * len(full["train"]))
    assert len(ten["train"]) == 10
    assert set(ten["train"]) <= set(full["train"]) and set(half["train"]) <= set(full["train"])
    np.testing.assert_array_equal(every["train"], full["train"])
    np.testing.assert_array_equal(ten["val"], full["val"])  # val/test do not move
    np.testing.assert_array_equal(ten["test"], full["test"])


def test_too_few_videos_fall_back_to_frames_with_a_note(tmp_path):
    labels = _labels([10, 10])
    split = split_frames(labels, train_prob=0.8, val_prob=0.1, seed=0)
    assert not split.grouped
    assert "only 2 video(s)" in split.note and "near-duplicate" in split.note
    assert [len(split[k]) for k in ("train", "val", "test")] == [16, 2, 2]
    # train + val only needs two groups: still grouped
    grouped = split_frames(labels, train_prob=0.5, val_prob=0.5, seed=0)
    assert grouped.grouped and len(grouped["test"]) == 0
    assert len(set(_group_of(labels)[grouped["train"]])) == 1


@pytest.mark.parametrize("kwargs, key, text", [
    (dict(train_prob=0.9, val_prob=0.2), "training.train_prob", "train_prob + val_prob must be at most 1"),
    (dict(train_prob=0.0), "training.train_prob", "train_prob must be in (0, 1]"),
    (dict(train_prob=1.5), "training.train_prob", "train_prob must be in (0, 1]"),
    (dict(val_prob=-0.1), "training.val_prob", "val_prob must be in [0, 1)"),
    (dict(val_prob="0.1"), "training.val_prob", "val_prob must be a number"),
    (dict(train_frames=1.5), "training.train_frames", "a float train_frames is a fraction"),
    (dict(train_frames=0), "training.train_frames", "train_frames must be at least 1"),
    (dict(train_frames=500), "training.train_frames", "more frames than the"),
    (dict(train_frames="all"), "training.train_frames", "fraction in (0, 1] or a frame count"),
])
def test_bad_settings_are_config_errors(kwargs, key, text):
    with pytest.raises(ConfigError) as err:
        split_frames(_labels([3] * 10), **kwargs)
    assert str(err.value).startswith(key + ":") and text in str(err.value)


def test_write_and_read_split_round_trip(tmp_path):
    labels = _labels([3, 4, 2, 5, 3], video=True)
    split = split_frames(labels, train_prob=0.6, val_prob=0.2, seed=4, train_frames=4)
    path = write_split(tmp_path / "run" / "split.csv", split, labels)
    lines = path.read_text().splitlines()
    assert lines[0] == "frame,split,image,video,video_frame"
    assert len(lines) == labels.num_frames + 1
    assert sum(",unused," in line for line in lines) == labels.num_frames - sum(len(v) for v in split.values())
    back = read_split(path, labels)
    for key in split:
        np.testing.assert_array_equal(back[key], split[key])
    row = lines[1].split(",")
    assert row[3] == "/data/videos/vid0.mp4" and row[4] == "0"


def test_read_split_errors(tmp_path):
    labels = _labels([3, 3, 3])
    with pytest.raises(DataError, match="split file not found"):
        read_split(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a split file"):
        read_split(bad)
    path = write_split(tmp_path / "split.csv", split_frames(labels, seed=0), labels)
    with pytest.raises(DataError, match="written for other labels"):
        read_split(path, _labels([3, 3, 3], video=True))
    text = path.read_text().replace(",train,", ",trian,", 1)
    path.write_text(text)
    with pytest.raises(DataError, match="malformed row"):
        read_split(path)


def test_empty_labels_are_a_data_error():
    with pytest.raises(DataError, match="no labeled frames"):
        split_frames(_labels([]))
