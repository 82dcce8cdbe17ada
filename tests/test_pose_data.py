"""Pose frames dataset: exact resize mapping, image and video loading, normalisation."""

import numpy as np
import pytest
import torch

from bioloop.data.synthetic_pose import make_pose_dataset
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.pose.augment import build_augmentation
from bioloop.tasks.pose.data import (IMAGENET_MEAN, IMAGENET_STD, PoseFrames, check_resize_dims,
                                     resize_image, resize_keypoints, unresize_keypoints)
from bioloop.tasks.pose.labels import PoseLabels, read_labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_pose_dataset(tmp_path_factory.mktemp("pose"), n_frames=6, n_videos=2)


def test_resize_golden_values():
    # pixel edges map to pixel edges: -0.5 -> -0.5 and W - 0.5 -> W' - 0.5; centre to centre
    out = resize_keypoints([[-0.5, -0.5], [199.5, 99.5], [99.5, 49.5], [0.0, 0.0]], (100, 200), (50, 100))
    np.testing.assert_allclose(out, [[-0.5, -0.5], [99.5, 49.5], [49.5, 24.5], [-0.25, -0.25]])
    np.testing.assert_allclose(resize_keypoints([[3.0, 1.0]], (4, 4), (12, 8)), [[6.5, 4.0]])


def test_resize_round_trip_is_exact_for_arbitrary_sizes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        orig = tuple(int(v) for v in rng.integers(7, 2000, 2))
        new = tuple(int(v) for v in rng.integers(7, 2000, 2))
        xy = rng.uniform(-0.5, max(orig) - 0.5, (10, 2))
        xy[3] = np.nan
        back = unresize_keypoints(resize_keypoints(xy, orig, new), orig, new)
        np.testing.assert_allclose(back, xy, atol=1e-6)
        assert np.isnan(back[3]).all()


@pytest.mark.parametrize("new_hw", [(96, 120), (256, 200), (33, 47)])
def test_resized_image_keeps_a_dot_on_its_resized_keypoint(new_hw):
    h, w = 64, 80
    yy, xx = np.mgrid[:h, :w]
    x0, y0 = 41.3, 22.6
    img = np.rint(255 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 3.0 ** 2))).astype(np.uint8)
    out = resize_image(np.repeat(img[..., None], 3, axis=2), new_hw).astype(float)[..., 0]
    assert out.shape == new_hw
    m = out > 0.3 * out.max()
    cy, cx = (np.array(np.nonzero(m)) * out[m]).sum(axis=1) / out[m].sum()
    ex, ey = resize_keypoints([x0, y0], (h, w), new_hw)
    assert abs(cx - ex) < 0.35 * new_hw[1] / w + 0.2 and abs(cy - ey) < 0.35 * new_hw[0] / h + 0.2


def test_frames_from_images_golden(dataset):
    labels = read_labels(dataset.csv_path)
    frames = PoseFrames(labels, [0, 3, 7], image_resize_dims={"height": 64, "width": 80})
    assert len(frames) == 3
    item = frames[1]
    assert item["index"] == 3
    assert item["image"].shape == (3, 64, 80) and item["image"].dtype == torch.float32
    assert item["orig_hw"].tolist() == [128, 160]
    expected = (dataset.keypoints[3, 0] + 0.5) / 2 - 0.5  # 128x160 -> 64x80 halves every side
    np.testing.assert_allclose(item["keypoints"].numpy(), expected, atol=1e-4)
    assert np.isnan(item["keypoints"].numpy()).any() == np.isnan(expected).any()
    # ImageNet normalisation of the area-averaged pixels
    raw = dataset.images[3].astype(np.float64).reshape(64, 2, 80, 2, 3).mean(axis=(1, 3))
    want = (raw / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(item["image"].numpy().transpose(1, 2, 0), want, atol=0.05)


def test_video_frames_give_the_same_keypoints_and_pixels(dataset):
    images = read_labels(dataset.csv_path)
    n = len(dataset.image_paths)
    videos = PoseLabels(keypoints=dataset.keypoints, keypoint_names=dataset.keypoint_names,
                        image_paths=[""] * n,
                        video_paths=[dataset.video_paths[v] for v in dataset.video_index],
                        frame_indices=dataset.frame_index)
    a = PoseFrames(images, image_resize_dims=(96, 112))
    b = PoseFrames(videos, image_resize_dims=(96, 112))
    for i in [0, 5, 6, 2, 11, 3]:  # out of order: seeks backwards and across videos
        x, y = a[i], b[i]
        np.testing.assert_array_equal(x["keypoints"].numpy(), y["keypoints"].numpy())
        assert x["orig_hw"].tolist() == y["orig_hw"].tolist()
        assert float((x["image"] - y["image"]).abs().mean()) < 0.15  # mp4 is lossy


def test_training_keys_augment_deterministically(dataset):
    labels = read_labels(dataset.csv_path)
    aug = build_augmentation("dlc-lr", labels.keypoint_names)
    frames = PoseFrames(labels, image_resize_dims=(64, 80), augmentation=aug)
    a, b, c = frames[(2, 11)], frames[(2, 11)], frames[(2, 12)]
    assert torch.equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["keypoints"].numpy(), b["keypoints"].numpy())
    assert not torch.equal(a["image"], c["image"])
    plain = frames[2]  # an int key (evaluation) is never augmented
    np.testing.assert_allclose(plain["keypoints"].numpy(), (dataset.keypoints[2, 0] + 0.5) / 2 - 0.5, atol=1e-4)
    batch = next(iter(torch.utils.data.DataLoader(frames, batch_size=3)))
    assert batch["image"].shape == (3, 3, 64, 80) and batch["keypoints"].shape == (3, 8, 2)


def test_grayscale_image_becomes_three_channels_and_multi_animal_is_flat(tmp_path):
    import cv2

    gray = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    labels = PoseLabels(keypoints=np.arange(2 * 3 * 2, dtype=float).reshape(1, 2, 3, 2),
                        keypoint_names=["a", "b", "c"], image_paths=[str(tmp_path / "g.png")],
                        individuals=["m1", "m2"])
    item = PoseFrames(labels)[0]
    img = item["image"].numpy()
    assert img.shape == (3, 20, 30)
    np.testing.assert_allclose(img * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None],
                               np.repeat(gray[None] / 255.0, 3, axis=0), atol=1e-5)
    np.testing.assert_array_equal(item["keypoints"].numpy(), np.arange(12).reshape(6, 2))


def test_errors(tmp_path, dataset):
    missing = PoseLabels(keypoints=np.zeros((1, 1, 1, 2)), keypoint_names=["a"],
                         image_paths=[str(tmp_path / "nope.png")])
    with pytest.raises(DataError, match="nope.png: cannot read the image"):
        PoseFrames(missing)[0]
    late = PoseLabels(keypoints=np.zeros((1, 1, 1, 2)), keypoint_names=["a"], image_paths=[""],
                      video_paths=[dataset.video_paths[0]], frame_indices=[99])
    with pytest.raises(DataError, match=r"cannot read frame 99 \(the video has 6 frames\)"):
        PoseFrames(late)[0]
    nowhere = PoseLabels(keypoints=np.zeros((1, 1, 1, 2)), keypoint_names=["a"], image_paths=[""],
                         video_paths=[str(tmp_path / "none.mp4")], frame_indices=[0])
    with pytest.raises(DataError, match="OpenCV cannot open the video"):
        PoseFrames(nowhere)[0]
    neither = PoseLabels(keypoints=np.zeros((1, 1, 1, 2)), keypoint_names=["a"], image_paths=[""])
    with pytest.raises(DataError, match="neither an image path nor a video"):
        PoseFrames(neither)[0]
    with pytest.raises(ConfigError, match=r"data.image_resize_dims: image_resize_dims must be positive"):
        check_resize_dims((0, 64))
    with pytest.raises(ConfigError, match="must be \\(height, width\\)"):
        check_resize_dims(64)
    with pytest.raises(ConfigError, match="exactly 'height' and 'width'"):
        check_resize_dims({"height": 64})
    assert check_resize_dims({"height": 64, "width": 32}) == (64, 32) and check_resize_dims(None) is None


# ---- temporal context windows (heatmap_mhcrnn) ----

def _coded(i, h=24, w=32):
    """A flat grey frame whose value codes its index (survives mp4 compression)."""
    return np.full((h, w, 3), 20 * i + 10, np.uint8)


def _frame_index(x):
    rgb = x.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return int(round((float(rgb.mean()) * 255 - 10) / 20))


def test_context_paths_golden(tmp_path):
    from bioloop.tasks.pose.data import context_paths

    for i in [0, 1, 2, 4, 5]:  # img0003 is missing
        (tmp_path / f"img{i:04d}.png").touch()
    p = lambda i: str(tmp_path / f"img{i:04d}.png")  # noqa: E731
    assert context_paths(p(4), 2) == [p(2), p(4), p(4), p(5), p(4)]
    assert context_paths(p(1), 2) == [p(1), p(0), p(1), p(2), p(1)]
    assert context_paths(p(4), 0) == [p(4)]
    seen = []
    assert context_paths("/x/frame7.jpg", 1, exists=lambda q: seen.append(q) or True) == \
        ["/x/frame6.jpg", "/x/frame7.jpg", "/x/frame8.jpg"]
    assert context_paths("/x/img099.png", 2, exists=lambda q: True)[-1] == "/x/img101.png"
    assert context_paths("/x/still.png", 1) == ["/x/still.png"] * 3


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("context")
    for i in [0, 1, 2, 4, 5]:
        cv2.imwrite(str(root / f"img{i:04d}.png"), _coded(i)[..., ::-1])
    video = str(root / "v.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (32, 24))
    for i in range(8):
        writer.write(_coded(i))
    writer.release()
    return root, video


def test_context_windows_from_an_image_folder(coded):
    root, _ = coded
    kp = np.arange(3 * 2 * 2, dtype=float).reshape(3, 1, 2, 2)
    labels = PoseLabels(keypoints=kp, keypoint_names=["a", "b"],
                        image_paths=[str(root / f"img{i:04d}.png") for i in [0, 2, 4]])
    frames = PoseFrames(labels, image_resize_dims=(12, 16), context=2)
    windows = [[_frame_index(f) for f in frames[i]["image"]] for i in range(3)]
    assert windows == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 4], [2, 4, 4, 5, 4]]  # missing file -> the centre
    item = frames[2]
    assert item["image"].shape == (5, 3, 12, 16) and item["orig_hw"].tolist() == [24, 32]
    np.testing.assert_allclose(item["keypoints"].numpy(), (kp[2, 0] + 0.5) / 2 - 0.5)  # the centre's
    batch = next(iter(torch.utils.data.DataLoader(frames, batch_size=3)))
    assert batch["image"].shape == (3, 5, 3, 12, 16)


def test_context_windows_from_a_video_replicate_edges_with_one_seek(coded):
    _, video = coded
    labels = PoseLabels(keypoints=np.zeros((3, 1, 1, 2)), keypoint_names=["a"], image_paths=[""] * 3,
                        video_paths=[video] * 3, frame_indices=[4, 0, 7])
    frames = PoseFrames(labels, context=2)
    entry = frames.reader._capture(video)
    calls = []

    class Counting:  # counts seeks on the real capture
        def __getattr__(self, name):
            return getattr(entry_cap, name)

        def set(self, *args):
            calls.append(args)
            return entry_cap.set(*args)

    entry_cap, entry[0] = entry[0], Counting()
    windows = [[_frame_index(f) for f in frames[i]["image"]] for i in range(3)]
    assert windows == [[2, 3, 4, 5, 6], [0, 0, 0, 1, 2], [5, 6, 7, 7, 7]]
    assert len(calls) == 3  # one seek per window (the first one too: the capture was at frame 0)
    with pytest.raises(ConfigError, match="PoseFrames: context: must be an integer >= 0"):
        PoseFrames(labels, context=-1)
    late = PoseLabels(keypoints=np.zeros((1, 1, 1, 2)), keypoint_names=["a"], image_paths=[""],
                      video_paths=[video], frame_indices=[9])
    with pytest.raises(DataError, match=r"cannot read frame 9 \(the video has 8 frames\)"):
        PoseFrames(late, context=2)[0]


@pytest.mark.parametrize("pipeline", ["dlc", "dlc-lr", "dlc-top-down"])
def test_builtin_augmentation_draws_do_not_depend_on_the_pixels(pipeline):
    """Same seed, different content: pixels from the shared left half come out identical, so the
    geometric and intensity draws are the same whatever the image holds."""
    aug = build_augmentation(pipeline, ["a_left", "a_right"])
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    b = a.copy()
    b[:, 32:] = rng.integers(0, 100, (48, 32, 3), dtype=np.uint8)  # another right half (and mean)
    kp = np.array([[[10.0, 20.0], [50.0, 30.0]]])
    same, other = [], []
    for seed in range(12):
        (x, kx), (y, ky) = aug(a, kp, np.random.default_rng(seed)), aug(b, kp, np.random.default_rng(seed))
        np.testing.assert_array_equal(kx, ky)
        same.append(np.mean(np.all(x == y, axis=-1)))
        z, _ = aug(b, kp, np.random.default_rng(seed + 100))
        other.append(np.mean(np.all(x == z, axis=-1) & (x.sum(-1) > 0)))
    assert min(same) > 0.25 and np.median(other) < 0.1  # (a seed drawing no transform at all matches too)


def test_context_window_frames_get_the_same_augmentation(tmp_path):
    import cv2

    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    for i in range(5):
        img = base.copy()
        img[:4, :4] = 40 * i  # a small corner mark tells the frames apart
        cv2.imwrite(str(tmp_path / f"img{i:04d}.png"), img[..., ::-1])
    labels = PoseLabels(keypoints=np.array([[[[20.0, 15.0], [30.0, 25.0]]]]), keypoint_names=["ear_left", "ear_right"],
                        image_paths=[str(tmp_path / "img0002.png")])
    aug = build_augmentation("dlc-top-down", labels.keypoint_names)
    frames = PoseFrames(labels, augmentation=aug, context=2)
    single = PoseFrames(labels, augmentation=aug)
    for seed in range(6):
        item = frames[(0, seed)]
        window = item["image"].numpy()
        for j in range(5):  # every frame moved like the centre: only pixels near the mark differ
            assert np.mean(np.abs(window[j] - window[2]).max(axis=0) > 1e-6) < 0.08
        alone = single[(0, seed)]
        np.testing.assert_allclose(window[2], alone["image"].numpy())
        np.testing.assert_array_equal(item["keypoints"].numpy(), alone["keypoints"].numpy())
    assert not np.allclose(frames[(0, 0)]["image"].numpy(), frames[(0, 1)]["image"].numpy())
