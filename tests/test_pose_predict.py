"""Pose prediction: the background reader, temporal context windows fed to heatmap_mhcrnn, and .slp output."""

import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from bioloop.errors import DataError
from bioloop.tasks.pose.data import IMAGENET_MEAN, IMAGENET_STD
from bioloop.tasks.pose.models import build_lp_model
from bioloop.tasks.pose.predict import (combine_context_heatmaps, is_context_model, predict_pose, prefetch,
                                        write_predictions_slp)
from bioloop.tasks.pose.task import TASK

N, H, W = 9, 48, 64
NAMES = ["nose", "tail"]


def _coded(i):
    """A flat grey frame whose value codes its index (survives mp4 compression)."""
    return np.full((H, W, 3), 20 * i + 10, np.uint8)


def _index_of(x):
    """Frame index of a normalised (3, h, w) network input made from a _coded frame."""
    rgb = x.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return int(round((float(rgb.mean()) * 255 - 10) / 20))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    video = root / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H))
    for i in range(N):
        writer.write(_coded(i))
    writer.release()
    folder = root / "frames"
    folder.mkdir()
    for i in [0, 1, 2, 4, 5]:  # img0003 is missing
        cv2.imwrite(str(folder / f"img{i:04d}.png"), _coded(i))
    return SimpleNamespace(root=root, video=str(video), folder=str(folder))


def _cfg(batch=4):
    return SimpleNamespace(keypoint_names=NAMES, image_resize_dims=SimpleNamespace(height=32, width=32),
                           dali=SimpleNamespace(base_predict_sequence_length=batch,
                                                context_predict_sequence_length=batch),
                           eval=SimpleNamespace(save_vids_after_training=False, colormap="cool",
                                                confidence_thresh_for_vid=0.9))


@pytest.fixture(scope="module")
def mhcrnn():
    torch.manual_seed(0)
    model = build_lp_model("heatmap_mhcrnn", "test_resnet", len(NAMES), downsample_factor=2)
    seen = []
    forward = model.forward

    def record(frames):
        seen.append(frames.clone())
        return forward(frames)

    sequence = model.forward_sequence

    def record_sequence(frames):  # videos: consecutive frames; record the windows they stand for
        seen.append(torch.stack([frames[i:i + 5] for i in range(len(frames) - 4)]))
        return sequence(frames)

    model.forward = record
    model.forward_sequence = record_sequence
    model.seen = seen
    return model


def test_prefetch_keeps_order_and_stays_two_ahead():
    made = []

    def produce():
        for i in range(20):
            made.append(i)
            yield i

    out = []
    for item in prefetch(produce(), depth=2):
        time.sleep(0.002)
        assert len(made) - len(out) <= 4  # 2 queued + 1 waiting to be queued + the one handed out
        out.append(item)
    assert out == list(range(20))


def test_prefetch_raises_the_decode_error_at_its_item_and_stops_on_close():
    def broken():
        yield 0
        yield 1
        raise DataError.at("v.mp4", "could not decode frame 2", fix="re-encode it")

    got = []
    with pytest.raises(DataError, match="v.mp4: could not decode frame 2"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [0, 1]
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    gen = prefetch(endless())
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert closed.wait(2.0)


def test_combine_context_heatmaps_keeps_the_more_confident_map():
    sf = torch.zeros(1, 2, 3, 3)
    mf = torch.zeros(1, 2, 3, 3)
    sf[0, 0, 1, 1], mf[0, 0, 0, 0] = 0.9, 0.5  # keypoint 0: static wins
    sf[0, 1, 2, 2], mf[0, 1, 0, 2] = 0.3, 0.8  # keypoint 1: context wins
    out = combine_context_heatmaps({"heatmaps_sf": sf, "heatmaps_mf": mf})
    assert torch.equal(out["heatmaps"][0, 0], sf[0, 0]) and torch.equal(out["heatmaps"][0, 1], mf[0, 1])
    plain = {"heatmaps": sf}
    assert combine_context_heatmaps(plain) is plain
    assert is_context_model(torch.nn.Conv2d(1, 1, 1), {"model_type": "heatmap_mhcrnn"})
    assert not is_context_model(torch.nn.Conv2d(1, 1, 1), {"model_type": "heatmap"})


def test_context_model_on_a_video_sees_windows_with_replicated_edges(media, mhcrnn, tmp_path):
    mhcrnn.seen.clear()
    out = predict_pose(_cfg(batch=4), mhcrnn, TASK, extras={}, input=media.video, output=tmp_path / "v.csv",
                       show_progress=False)
    table = pd.read_csv(out, header=[0, 1, 2], index_col=0)
    assert table.shape == (N, 3 * len(NAMES)) and table.index.tolist() == list(range(N))
    assert [len(x) for x in mhcrnn.seen] == [4, 4, 1]  # batches of dali.context_predict_sequence_length
    windows = torch.cat(mhcrnn.seen)
    assert windows.shape == (N, 5, 3, 32, 32)
    got = np.array([[_index_of(f) for f in w] for w in windows])
    np.testing.assert_array_equal(got, np.clip(np.arange(N)[:, None] + np.arange(-2, 3), 0, N - 1))
    xy = table.drop(columns="likelihood", level=2).to_numpy()
    assert np.isfinite(xy).all() and (xy >= -0.5).all() and (xy[:, 0::2] < W).all()


def test_context_model_on_an_image_folder_uses_neighbour_files(media, mhcrnn, tmp_path):
    mhcrnn.seen.clear()
    out = predict_pose(_cfg(batch=2), mhcrnn, TASK, extras={"model_type": "heatmap_mhcrnn"}, input=media.folder,
                       output=tmp_path / "f.csv", show_progress=False)
    table = pd.read_csv(out, header=[0, 1, 2], index_col=0)
    assert [p.rsplit("/", 1)[-1] for p in table.index] == [f"img{i:04d}.png" for i in [0, 1, 2, 4, 5]]
    got = [[_index_of(f) for f in w] for w in torch.cat(mhcrnn.seen)]
    assert got == [[0, 0, 0, 1, 2],  # before frame 0: the centre
                   [1, 0, 1, 2, 1],  # img0003 missing: the centre
                   [0, 1, 2, 2, 4],
                   [2, 4, 4, 5, 4],  # img0006 missing
                   [5, 4, 5, 5, 5]]


def test_slp_output_round_trips_through_sleap_io(media, tmp_path):
    import sleap_io as sio

    from bioloop.tasks.pose.labels import read_slp

    torch.manual_seed(0)
    model = build_lp_model("heatmap", "test_resnet", len(NAMES), downsample_factor=2)
    for source, name in [(media.video, "v"), (media.folder, "f")]:
        csv = predict_pose(_cfg(), model, TASK, extras={}, input=source, output=tmp_path / f"{name}.csv",
                           slp_output=tmp_path / f"{name}.slp", show_progress=False)
        table = pd.read_csv(csv, header=[0, 1, 2], index_col=0)
        xy = table.drop(columns="likelihood", level=2).to_numpy().reshape(len(table), len(NAMES), 2)
        like = table.xs("likelihood", axis=1, level=2).to_numpy()
        labels = sio.load_slp(str(tmp_path / f"{name}.slp"), open_videos=False)
        assert labels.skeletons[0].node_names == NAMES and len(labels.labeled_frames) == len(table)
        for i, lf in enumerate(labels.labeled_frames):
            inst = lf.predicted_instances[0]
            assert lf.frame_idx == i
            np.testing.assert_allclose(inst.numpy(), xy[i], atol=1e-4)
            np.testing.assert_allclose(inst.points["score"], like[i], atol=1e-5)
            assert inst.score == pytest.approx(like[i].mean(), abs=1e-5)
        back = read_slp(tmp_path / f"{name}.slp", include_predicted=True)
        np.testing.assert_allclose(back.keypoints[:, 0], xy, atol=1e-4)
        if name == "v":
            assert labels.videos[0].filename == media.video and labels.videos[0].shape[1:3] in ([H, W], (H, W))
            assert back.video_paths == [media.video] * N and back.frame_indices.tolist() == list(range(N))
        else:
            assert [p.rsplit("/", 1)[-1] for p in back.image_paths] == [f"img{i:04d}.png" for i in [0, 1, 2, 4, 5]]
    with pytest.raises(DataError, match=r"f.slp: output already exists"):
        predict_pose(_cfg(), model, TASK, extras={}, input=media.folder, output=tmp_path / "other.csv",
                     slp_output=tmp_path / "f.slp", show_progress=False)


def test_write_predictions_slp_with_frame_indices(tmp_path):
    import sleap_io as sio

    kp = np.array([[[1.25, 2.5], [3.0, 4.75]]] * 2)
    write_predictions_slp(tmp_path / "p.slp", kp, [[0.5, 1.0], [0.2, 0.4]], NAMES, video=tmp_path / "x.mp4",
                          frame_indices=[3, 7], frame_shape=(10, 12), fps=25.0)
    labels = sio.load_slp(str(tmp_path / "p.slp"), open_videos=False)
    assert [lf.frame_idx for lf in labels.labeled_frames] == [3, 7]
    np.testing.assert_array_equal(labels.labeled_frames[1].instances[0].numpy(), kp[1])
    assert labels.labeled_frames[1].instances[0].score == pytest.approx(0.3)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 16])
def test_video_sequences_hold_the_same_windows_as_context_batches(tmp_path, batch_size):
    from bioloop.data.synthetic_pose import make_pose_dataset
    from bioloop.tasks.pose.predict import _video_batches, _video_sequences

    data = make_pose_dataset(tmp_path / "d", n_frames=9, n_videos=1, image_size=(32, 40))
    hw = (32, 40)
    windows = np.concatenate([w for _, _, w in _video_batches(data.video_paths[0], 4, None, 2, hw)])
    centres, rebuilt = [], []
    for index, sizes, seq in _video_sequences(data.video_paths[0], batch_size, None, 2, hw):
        assert len(seq) == len(index) + 4 and len(sizes) == len(index) <= batch_size
        centres.extend(index)
        rebuilt.extend(seq[i:i + 5] for i in range(len(index)))
    assert centres == list(range(9))
    assert np.array_equal(np.stack(rebuilt), windows)


def test_outputs_are_indexed_by_project_paths_and_every_file_is_reported(media, tmp_path, capsys):
    """Image rows read labeled-data/... relative to data_dir (as LP/DLC write them); the CSV, .slp and the
    overlay are all reported; the overlay is H.264 when this OpenCV can write it, else mp4v, said once."""
    from bioloop.data.mp4 import ffmpeg_h264, h264_fourcc

    torch.manual_seed(0)
    model = build_lp_model("heatmap", "test_resnet", len(NAMES), downsample_factor=2)
    cfg = _cfg()
    cfg.data_dir = str(media.root)
    written = []
    out = predict_pose(cfg, model, TASK, extras={}, input=media.folder, output=tmp_path / "f.csv",
                       slp_output=tmp_path / "f.slp", save_video=True, show_progress=False, written=written)
    assert written == [out, tmp_path / "f.slp"]
    assert "no overlay video" in capsys.readouterr().err  # asked for, but overlays need a video
    table = pd.read_csv(out, header=[0, 1, 2], index_col=0)
    assert list(table.index) == [f"frames/img{i:04d}.png" for i in [0, 1, 2, 4, 5]]

    written.clear()
    out = predict_pose(cfg, model, TASK, extras={}, input=media.video, output=tmp_path / "v.csv", save_video=True,
                       show_progress=False, written=written)
    overlay = tmp_path / "v.labeled.mp4"
    assert written == [out, overlay]
    reader = cv2.VideoCapture(str(overlay))
    fourcc = (int(reader.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF).to_bytes(4, "little").decode(errors="replace")
    frames = int(reader.get(cv2.CAP_PROP_FRAME_COUNT))
    reader.release()
    assert frames == N
    err = capsys.readouterr().err
    if h264_fourcc() is None and not ffmpeg_h264():
        assert fourcc == "FMP4" and err.count("can write H.264") == 1 and "mp4v" in err
    else:
        assert fourcc in ("avc1", "h264", "H264") and "can write H.264" not in err


def test_without_h264_the_overlay_falls_back_to_mp4v_with_one_line(tmp_path, capsys, monkeypatch):
    from bioloop.data import mp4

    monkeypatch.setitem(mp4._probed, "h264", None)
    monkeypatch.setitem(mp4._probed, "ffmpeg", None)
    writer = mp4.open_mp4_writer(tmp_path / "o.mp4", 10.0, (32, 48), fix="-", codec="h264")
    writer.write(np.zeros((32, 48, 3), np.uint8))
    writer.release()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "o.mp4: neither this OpenCV build (avc1/H264) nor imageio-ffmpeg can write H.264 for 48x32" in err
    reader = cv2.VideoCapture(str(tmp_path / "o.mp4"))
    assert (int(reader.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF).to_bytes(4, "little") == b"FMP4"
    reader.release()
