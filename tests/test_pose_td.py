"""Top-down pose (method = "td") through train -> predict -> evaluate, and its frame-pixel bookkeeping."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bioloop import api
from bioloop.errors import CheckpointError, ConfigError

NAN = np.nan
SMALL = "ssdlite320_mobilenet_v3_large"


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    from bioloop.data.synthetic_pose import make_pose_dataset

    return make_pose_dataset(tmp_path_factory.mktemp("multi"), n_frames=4, n_videos=2, n_animals=2,
                             image_size=(96, 128))


def _config(tmp_path, data, extra=""):
    path = tmp_path / "td.py"
    path.write_text(f"""
task = "pose"
method = "td"
data_dir = {str(data.root)!r}
keypoint_names = {list(data.keypoint_names)!r}
backbone = "test_resnet"
imgaug = "dlc-top-down"
train_prob = 0.5
val_prob = 0.5
unfreezing_epoch = 0
batch_size = 4
epochs = 1
iterations_per_epoch = 1
validation_batch_limit = 1
load_model = "latest"
model_name = "td"
model_save_path = {str(tmp_path / 'ck' / '{model_name}_{epoch}.pth')!r}
logs_save_path = {str(tmp_path / 'logs')!r}
detector = {{"model": {{"type": "SSDLite"}}, "train_settings": {{"batch_size": 2, "epochs": 1}},
            "crop_size": {{"height": 64, "width": 64}}, "score_threshold": 0.0, "max_animals": 2}}
{extra}""")
    return path


def test_topdown_train_predict_evaluate(tmp_path, multi, one_thread):
    videos = str(Path(multi.root) / "videos")
    config = _config(tmp_path, multi, f"eval = {{'test_videos_directory': {videos!r}}}\n")
    with pytest.raises(CheckpointError, match=r"ck/detector: no trained detector in this folder.*train first"):
        from bioloop.tasks.pose.td_task import load_config_detector

        load_config_detector(api.load_config(str(config)), "cpu")
    result = api.train(str(config), quiet=True)
    folder = tmp_path / "ck" / "detector"
    assert result["detector_checkpoint"] == str(folder / "detector-001.pt")
    assert (folder / "detector-001.pt").is_file() and (tmp_path / "logs" / "detector" / "metrics.csv").is_file()
    assert "pixel_error/mean" in result["best"]
    preds = tmp_path / "logs" / "video_preds"  # predicted after the detector was trained
    assert sorted(Path(p).name for p in result["video_predictions"]) == ["video0.csv", "video1.csv"]
    assert pd.read_csv(preds / "video1.csv", header=[0, 1, 2, 3], index_col=0).shape[0] == 4
    stamp = (folder / "detector-001.pt").stat().st_mtime_ns
    again = api.train(str(config), quiet=True)  # finished: the detector is not retrained
    assert again["detector_checkpoint"] == result["detector_checkpoint"]
    assert (folder / "detector-001.pt").stat().st_mtime_ns == stamp

    out = api.predict(str(config), input=multi.video_paths[0], output=str(tmp_path / "pred.csv"),
                      slp_output=str(tmp_path / "pred.slp"), save_video=True, show_progress=False)
    table = pd.read_csv(out, header=[0, 1, 2, 3], index_col=0)
    assert list(table.columns.get_level_values("individuals").unique()) == ["animal0", "animal1"]
    assert table.shape == (4, 2 * 3 * len(multi.keypoint_names))
    assert (tmp_path / "pred.labeled.mp4").is_file()
    from bioloop.tasks.pose.labels import read_slp

    slp = read_slp(tmp_path / "pred.slp", include_predicted=True)
    assert slp.num_frames == 4
    images = api.predict(str(config), input=str(Path(multi.root) / "labeled-data" / "video0"),
                         output=str(tmp_path / "images.csv"), show_progress=False)
    scores = api.evaluate(str(config), prediction=str(images), truth=multi.csv_path,
                          report=str(tmp_path / "report.json"))
    assert scores["frames"] == 4 and scores["animals"] == 8
    assert np.isfinite(scores["scores"]["pixel_error/mean"])
    assert json.loads((tmp_path / "report.json").read_text())["animals"] == 8


def test_validation_maps_crop_pixels_back_to_frame_pixels(tmp_path, multi):
    from bioloop.tasks.pose.task import PoseTask

    cfg = api.load_config(str(_config(tmp_path, multi)))
    # box (10, 20, 50, 40) in a 64 x 64 crop: scale 1.6, offset (-16.5, -16.5); crop (31.5, 31.5) = frame (30, 30)
    pred = torch.full((1, 2, 2), 31.5)
    true = torch.tensor([[[31.5 + 1.6 * 3, 31.5 + 1.6 * 4], [NAN, NAN]]])

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return {"keypoints": pred}

    batch = {"image": torch.zeros(1, 3, 64, 64), "keypoints": true,
             "box": torch.tensor([[10.0, 20.0, 50.0, 40.0]], dtype=torch.float64)}
    part = PoseTask().validation_step(Fixed(), batch, None, cfg)
    np.testing.assert_allclose(part["pred"], [[[30, 30], [30, 30]]])
    np.testing.assert_allclose(part["true"][0, 0], [33, 34])
    assert np.isnan(part["true"][0, 1]).all()
    cfg = api.load_config(str(_config(tmp_path, multi)), ["keypoint_names=['a', 'b']"])
    metrics = PoseTask().reduce_validation([part], cfg)
    assert metrics["pixel_error/mean"] == pytest.approx(5.0)
    assert metrics["pixel_error/a"] == pytest.approx(5.0)


def test_topdown_rejects_context_models(tmp_path, multi):
    from bioloop.tasks.pose.task import PoseTask

    cfg = api.load_config(str(_config(tmp_path, multi, "model_type = 'heatmap_mhcrnn'\n")))
    with pytest.raises(ConfigError, match=r"td.py: method: top-down models do not support "
                                          r"model_type = 'heatmap_mhcrnn'.*use method = 'bu'"):
        PoseTask().build_datasets(cfg)


def test_crop_datasets_give_one_item_per_animal(tmp_path, multi):
    from bioloop.tasks.pose.task import PoseTask

    cfg = api.load_config(str(_config(tmp_path, multi)))
    train, val = PoseTask().build_datasets(cfg)
    assert len(train) == 8 and len(val) == 8  # 4 frames x 2 animals each
    item = train[(0, 7)]
    assert item["image"].shape == (3, 64, 64) and item["box"].shape == (4,)
    assert val[0]["keypoints"].shape == (len(multi.keypoint_names), 2)


def test_flat_detector_override_wins_over_nested_spelling(tmp_path, multi):
    cfg = api.load_config(str(_config(tmp_path, multi)), ["detector.epochs=3", "detector.batch_size=1"])
    assert (cfg.detector.epochs, cfg.detector.batch_size) == (3, 1)


def test_pack_animals_pads_with_nan():
    from bioloop.tasks.pose.td_task import pack_animals

    one = (np.ones((1, 2, 2)), np.full((1, 2), 0.5))
    none = (np.zeros((0, 2, 2)), np.zeros((0, 2)))
    kp, conf = pack_animals([one, none], 2, None)
    assert kp.shape == (2, 1, 2, 2) and np.isnan(kp[1]).all() and conf[0, 0, 0] == 0.5
    kp, _ = pack_animals([one, none], 2, 3)
    assert kp.shape == (2, 3, 2, 2) and np.isnan(kp[0, 1:]).all()


# ---------------------------------------------------------------- multi-animal evaluation

def test_hungarian_matching_golden(tmp_path):
    from bioloop.tasks.pose.evaluate import match_animals
    from bioloop.tasks.pose.labels import write_dlc_csv

    a = np.array([[10.0, 10.0], [20.0, 10.0]])
    b = np.array([[50.0, 50.0], [60.0, 50.0]])
    truth = np.stack([np.stack([a, b]), np.stack([a, b])])  # 2 frames, 2 animals, 2 keypoints
    pred = np.full_like(truth, NAN)
    pred[0, 0], pred[0, 1] = b + [3, 4], a  # frame 0: listed in swapped order, b off by 5 pixels
    pred[1, 0] = b  # frame 1: only b found, a is missed
    np.testing.assert_allclose(match_animals(pred[0], truth[0]), [a, b + [3, 4]])
    assert np.isnan(match_animals(pred[1], truth[1])[0]).all()
    images = ["labeled-data/v/img0000.png", "labeled-data/v/img0001.png"]
    write_dlc_csv(tmp_path / "truth.csv", truth, keypoint_names=["p", "q"], image_paths=images)
    write_dlc_csv(tmp_path / "pred.csv", pred, likelihood=np.ones(pred.shape[:3]), keypoint_names=["p", "q"],
                  image_paths=images)
    cfg = api.load_config(str(_write(tmp_path)))
    result = api.evaluate(cfg, prediction=str(tmp_path / "pred.csv"), truth=str(tmp_path / "truth.csv"))
    s = result["scores"]
    assert (result["frames"], result["animals"]) == (2, 4)
    assert s["pixel_error/mean"] == pytest.approx(10 / 6)  # 5, 5, 0, 0 in frame 0; 0, 0 for b in frame 1
    assert s["missed/fraction"] == pytest.approx(0.25)
    assert s["pck@3/mean"] == pytest.approx(4 / 8)


def _write(tmp_path):
    path = tmp_path / "eval.py"
    path.write_text(f"task = 'pose'\ndata_dir = {str(tmp_path)!r}\neval = {{'pck_thresholds': [3.0]}}\n")
    return path


@pytest.mark.slow
def test_detector_trains_under_ddp_on_every_rank(tmp_path, multi):
    """Two gloo processes: the detector's step runs inside DDP on both ranks, which end with equal weights."""
    from tests.test_distributed import _spawn

    text = _config(tmp_path, multi).read_text()
    ranks = _spawn(tmp_path, text)
    folder = tmp_path / "ck" / "detector"
    assert [r["result"]["detector_checkpoint"] for r in ranks] == [str(folder / "detector-001.pt")] * 2
    reduced = [c for r in ranks for c in r["collectives"] if c["name"] == "all_reduce"]
    assert reduced and all(c["ok"] for c in reduced)
    state = torch.load(folder / "detector-001.pt", weights_only=False)
    assert state["sampler"]["world_size"] == 2 and state["step"] == 1  # 2 frames, 1 per rank and batch
    run = json.loads((tmp_path / "logs" / "detector" / "run.json").read_text())
    assert run["world_size"] == 2
