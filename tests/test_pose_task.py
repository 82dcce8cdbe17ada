"""The pose task: train -> predict -> evaluate wiring through the shared engine."""

import json

import numpy as np
import pandas as pd

from bioloop import api


def _config(tmp_path, data, extra=""):
    path = tmp_path / "pose.py"
    path.write_text(f"""
task = "pose"
data_dir = {str(data.root)!r}
keypoint_names = {list(data.keypoint_names)!r}
image_resize_dims = {{"height": 64, "width": 80}}
backbone = "test_resnet"
imgaug = "dlc-lr"
train_prob = 0.5
val_prob = 0.5
unfreezing_epoch = 1
batch_size = 4
epochs = 2
iterations_per_epoch = 2
validation_batch_limit = 2
load_model = None
model_name = "pose"
model_save_path = {str(tmp_path / 'ck' / '{model_name}_{epoch}.pth')!r}
logs_save_path = {str(tmp_path / 'logs')!r}
{extra}""")
    return path


def test_pose_train_predict_evaluate(tmp_path):
    from bioloop.data.synthetic_pose import make_pose_dataset

    data = make_pose_dataset(tmp_path / "data", n_frames=6, n_videos=2)
    config = _config(tmp_path, data)
    result = api.train(str(config), quiet=True)
    assert "pixel_error/mean" in result["best"]
    split = (tmp_path / "logs" / "split.csv").read_text()
    assert "train" in split and "val" in split
    out = api.predict(str(config), input=data.video_paths[0], output=str(tmp_path / "pred.csv"),
                      save_video=True, show_progress=False)
    table = pd.read_csv(out, header=[0, 1, 2], index_col=0)
    assert table.shape == (6, 3 * len(data.keypoint_names))
    likelihood = table.xs("likelihood", axis=1, level=2).to_numpy()
    assert np.all((likelihood >= 0) & (likelihood <= 1))
    assert (tmp_path / "pred.labeled.mp4").exists()
    folder = api.predict(str(config), input=str(__import__("pathlib").Path(data.root) / "labeled-data" / "video0"),
                         output=str(tmp_path / "images.csv"), show_progress=False)
    scores = api.evaluate(str(config), prediction=str(folder), truth=str(data.csv_path),
                          report=str(tmp_path / "report.json"))
    assert scores["frames"] == 6 and "pixel_error/nose" in scores["scores"]
    assert json.loads((tmp_path / "report.json").read_text())["frames"] == 6


def test_frozen_backbone_does_not_move_before_unfreezing_epoch(tmp_path):
    import torch

    from bioloop.data.synthetic_pose import make_pose_dataset
    from bioloop.engine.checkpoint import load_checkpoint

    data = make_pose_dataset(tmp_path / "data", n_frames=4, n_videos=2, video=False)
    config = _config(tmp_path, data, "unfreezing_epoch = 5\nepochs = 1\n")
    api.train(str(config), quiet=True)
    state = load_checkpoint(next((tmp_path / "ck").glob("pose_1.pth")))["model"]
    cfg = api.load_config(str(config))
    from bioloop.tasks import get_task

    torch.manual_seed(cfg.random_seed)
    fresh = get_task("pose").build_model(cfg).state_dict()
    backbone = [k for k in state if k.startswith("backbone.") and state[k].dtype.is_floating_point
                and "running" not in k]
    head = [k for k in state if k.startswith("head.")]
    assert backbone and head
    assert all(torch.equal(state[k], fresh[k]) for k in backbone)
    assert any(not torch.equal(state[k], fresh[k]) for k in head)


def test_test_videos_are_predicted_after_training(tmp_path):
    from pathlib import Path

    from bioloop.data.synthetic_pose import make_pose_dataset

    data = make_pose_dataset(tmp_path / "data", n_frames=4, n_videos=2)
    videos = str(Path(data.root) / "videos")
    config = _config(tmp_path, data, f"epochs = 1\neval = {{'test_videos_directory': {videos!r}, "
                                     "'save_vids_after_training': True}\n")
    result = api.train(str(config), quiet=True)
    written = sorted(Path(p).name for p in result["video_predictions"])
    assert written == ["video0.csv", "video1.csv"]
    preds = tmp_path / "logs" / "video_preds"
    assert (preds / "video0.labeled.mp4").exists()
    assert pd.read_csv(preds / "video1.csv", header=[0, 1, 2], index_col=0).shape[0] == 4
