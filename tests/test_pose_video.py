"""Video reading through OpenCV (seeking, batches, context windows, unlabeled clips) and
keypoint overlays on frames and videos."""

import cv2
import numpy as np
import pytest
import torch

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.pose.overlay import keypoint_colours, render_overlay, write_overlay_video
from bioloop.tasks.pose.video import (UnlabeledFrames, VideoReader, iter_batches,
                                      iter_context_batches)

N, H, W = 20, 48, 64


def _make_video(path, n=N):
    """Each frame is flat grey with a value coding its index (10 * i), so lossy codecs keep it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H))
    for i in range(n):
        writer.write(np.full((H, W, 3), 10 * i, np.uint8))
    writer.release()
    return str(path)


def _index_of(frame):
    return int(round(float(frame.astype(float).mean()) / 10.0))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return _make_video(tmp_path_factory.mktemp("vid") / "v.mp4")


def test_reader_properties_and_seek(video):
    with VideoReader(video) as r:
        assert len(r) == N and r.hw == (H, W) and r.fps == pytest.approx(30.0)
        a = r.read(0, 3)
        assert a.shape == (3, H, W, 3) and a.dtype == np.uint8
        assert [_index_of(f) for f in a] == [0, 1, 2]
        assert [_index_of(f) for f in r.read(3, 2)] == [3, 4]  # sequential, no seek
        assert [_index_of(f) for f in r.read(15, 3)] == [15, 16, 17]  # forward seek
        assert [_index_of(f) for f in r.read(7, 2)] == [7, 8]  # backward seek
        assert _index_of(r.read(N - 1, 1)[0]) == N - 1


def test_reader_errors(video, tmp_path):
    with pytest.raises(DataError, match="video file not found"):
        VideoReader(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DataError, match="OpenCV cannot open this video"):
        VideoReader(bad)
    with VideoReader(video) as r, pytest.raises(DataError, match="frame range outside the video"):
        r.read(N - 1, 2)


def test_iter_batches_covers_every_frame_and_resizes(video):
    batches = list(iter_batches(video, 8, resize_hw=(24, 32)))
    assert [len(i) for i, _ in batches] == [8, 8, 4]
    idx = np.concatenate([i for i, _ in batches])
    frames = np.concatenate([f for _, f in batches])
    assert idx.tolist() == list(range(N)) and frames.shape == (N, 24, 32, 3)
    assert [_index_of(f) for f in frames] == list(range(N))
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        next(iter_batches(video, 0))


def test_iter_context_batches_windows_with_replicated_edges(video, monkeypatch):
    calls = []
    orig = VideoReader.read_next
    monkeypatch.setattr(VideoReader, "read_next", lambda self: calls.append(1) or orig(self))
    batches = list(iter_context_batches(video, 6, context=2))
    assert len(calls) == N + 1  # every frame decoded once (+ the end-of-video read)
    assert [len(i) for i, _ in batches] == [6, 6, 6, 2]
    idx = np.concatenate([i for i, _ in batches])
    win = np.concatenate([w for _, w in batches])
    assert idx.tolist() == list(range(N)) and win.shape == (N, 5, H, W, 3)
    got = np.array([[_index_of(f) for f in w] for w in win])
    expected = np.clip(np.arange(N)[:, None] + np.arange(-2, 3)[None, :], 0, N - 1)
    np.testing.assert_array_equal(got, expected)
    assert got[0].tolist() == [0, 0, 0, 1, 2] and got[-1].tolist() == [17, 18, 19, 19, 19]
    with pytest.raises(ConfigError, match="context: must be an integer >= 0"):
        next(iter_context_batches(video, 4, context=-1))


def test_unlabeled_frames_clips_are_seeded_and_consecutive(video, tmp_path):
    ds = UnlabeledFrames([video], sequence_length=5, resize_hw=(24, 32), length=7)
    assert len(ds) == 7
    a, b = ds[(0, 123)], ds[(5, 123)]
    assert torch.equal(a["images"], b["images"])  # same seed -> same clip
    assert a["images"].shape == (5, 3, 24, 32) and a["images"].dtype == torch.float32
    t = a["frame_indices"].numpy()
    assert np.all(np.diff(t) == 1) and 0 <= t[0] and t[-1] < N
    coded = [int(round(float(img.mean()) * 255 / 10)) for img in a["images"]]
    assert coded == t.tolist()
    starts = {int(ds[(0, s)]["frame_indices"][0]) for s in range(30)}
    assert len(starts) > 3  # different seeds draw different clips

    ctx = UnlabeledFrames([video], sequence_length=4, context=2)
    item = ctx[(0, 7)]
    assert item["images"].shape == (4, 5, 3, H, W)
    t = item["frame_indices"].numpy()
    coded = np.array([[int(round(float(f.mean()) * 255 / 10)) for f in w] for w in item["images"]])
    np.testing.assert_array_equal(coded, np.clip(t[:, None] + np.arange(-2, 3), 0, N - 1))


def test_unlabeled_frames_errors(video):
    with pytest.raises(DataError, match="no unlabeled videos given"):
        UnlabeledFrames([], sequence_length=4)
    with pytest.raises(DataError, match="video is shorter than sequence_length"):
        UnlabeledFrames([video], sequence_length=N + 1)
    with pytest.raises(ConfigError, match="sequence_length must be a positive integer"):
        UnlabeledFrames([video], sequence_length=0)
    with pytest.raises(ConfigError, match="context: must be an integer >= 0"):
        UnlabeledFrames([video], sequence_length=2, context=-1)


# ---- overlays (bioloop/tasks/pose/overlay.py) ----


def test_keypoint_colours_follow_the_colormap():
    import matplotlib

    cols = keypoint_colours(3, "cool")
    cool = matplotlib.colormaps["cool"]
    np.testing.assert_array_equal(cols[0], np.round(np.array(cool(0.0)[:3]) * 255))
    np.testing.assert_array_equal(cols[2], np.round(np.array(cool(1.0)[:3]) * 255))
    assert tuple(cols[0]) == (0, 255, 255) and tuple(cols[2]) == (255, 0, 255)
    with pytest.raises(ConfigError, match="eval.colormap: unknown matplotlib colormap"):
        keypoint_colours(3, "not_a_cmap")


def test_render_overlay_marks_confident_keypoints_only():
    frame = np.zeros((H, W, 3), np.uint8)
    kp = np.array([[10.2, 12.0], [40.0, 30.4], [55.0, 5.0], [np.nan, np.nan]])
    conf = np.array([0.95, 0.5, 0.9, 1.0])
    out = render_overlay(frame, kp, conf, colormap="cool", confidence_thresh=0.9, radius=3)
    cols = keypoint_colours(4, "cool")
    assert out.shape == frame.shape and frame.max() == 0  # input untouched
    np.testing.assert_array_equal(out[12, 10], cols[0])  # row y, column x
    np.testing.assert_array_equal(out[5, 55], cols[2])  # exactly at the threshold: drawn
    assert out[30, 40].max() == 0 and out[25:36, 35:46].max() == 0  # below threshold: absent
    assert out[12, 20].max() == 0  # the marker is local
    lined = render_overlay(frame, kp[:3], None, names=["a", "b", "c"], radius=2,
                           edges=[("a", "c")])
    assert tuple(lined[8, 32]) != (0, 0, 0)  # the edge passes between the two keypoints
    with pytest.raises(ConfigError, match="unknown keypoint name"):
        render_overlay(frame, kp[:3], None, names=["a", "b", "c"], edges=[("a", "z")])
    with pytest.raises(DataError, match="needs one value per keypoint"):
        render_overlay(frame, kp, conf[:2])


def test_write_overlay_video_has_every_frame_and_markers(video, tmp_path):
    T = N
    kp = np.tile(np.array([[20.0, 24.0], [50.0, 10.0]]), (T, 1, 1))
    conf = np.tile(np.array([0.99, 0.1]), (T, 1))
    out = write_overlay_video(video, kp, conf, tmp_path / "sub" / "overlay.mp4",
                              colormap="cool", confidence_thresh=0.9, show_progress=False,
                              radius=4)
    with VideoReader(out) as r:
        assert len(r) == T and r.hw == (H, W)
        frames = r.read(0, T)
    colour = keypoint_colours(2, "cool")[0].astype(int)
    centre = frames[:, 24, 20].astype(int)
    assert np.abs(centre - colour).max() < 40  # lossy codec: close to the colormap colour
    background = frames[:, 10, 50].astype(int)
    coded = (10 * np.arange(T))[:, None]
    assert np.abs(background - coded).max() < 20  # low-confidence keypoint not drawn
    with pytest.raises(DataError, match="one row per video frame"):
        write_overlay_video(video, kp[:5], conf[:5], tmp_path / "x.mp4", show_progress=False)
    with pytest.raises(DataError, match="confidence must have shape"):
        write_overlay_video(video, kp, conf[:, :1], tmp_path / "x.mp4", show_progress=False)


def test_video_frames_are_resized_like_labeled_frames(tmp_path):
    """iter_batches / iter_context_batches resize with data.resize_image, so predicted videos see the
    pixels training saw (one side shrinking, the other growing included)."""
    from bioloop.tasks.pose.data import resize_image

    rng = np.random.default_rng(0)
    path = str(tmp_path / "noise.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (W, H))
    for _ in range(3):
        writer.write(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    writer.release()
    (_, full), = list(iter_batches(path, 3))
    for hw in [(24, 32), (60, 40)]:
        (_, small), = list(iter_batches(path, 3, resize_hw=hw))
        np.testing.assert_array_equal(small, np.stack([resize_image(f, hw) for f in full]))
        (_, windows), = list(iter_context_batches(path, 3, context=1, resize_hw=hw))
        np.testing.assert_array_equal(windows[1], small)
