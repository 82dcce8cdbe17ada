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


def test_one_video_warns_and_the_test_split_is_scored_after_training(tmp_path, capsys):
    """One video: the split note is printed and kept in run.json; the best model is scored on the test
    split (printed, test_scores.json); evaluate --split scores the run's frames of one split only."""
    from click.testing import CliRunner

    from bioloop.cli import cli
    from bioloop.data.synthetic_pose import make_pose_dataset

    data = make_pose_dataset(tmp_path / "data", n_frames=8, n_videos=1, video=False)
    config = _config(tmp_path, data, extra="train_prob = 0.5\nval_prob = 0.25\n")
    # no keypoint_names: the labels file names them (the test table is keyed by those names)
    config.write_text("\n".join(line for line in config.read_text().splitlines()
                                if not line.startswith("keypoint_names")))
    result = api.train(str(config), quiet=False)
    err = capsys.readouterr().err
    assert "pose.py: train_prob: warning: only 1 video(s)/image folder(s) for 3 non-empty splits" in err
    record = json.loads((tmp_path / "logs" / "run.json").read_text())
    assert len(record["warnings"]) == 1 and "near-duplicate frames" in record["warnings"][0]
    assert "pixel_error/mean=" in err and "(key metric pixel_error/mean)" in err  # the epoch line's own value
    split = pd.read_csv(tmp_path / "logs" / "split.csv")
    test_frames = sorted(split.loc[split["split"] == "test", "frame"])
    assert len(test_frames) == 2
    report = json.loads((tmp_path / "logs" / "test_scores.json").read_text())
    assert report["split"] == "test" and report["frames"] == 2 and report["checkpoint"].endswith("pose_best.pth")
    assert report["scores"]["pixel_error/mean"] == result["test_scores"]["pixel_error/mean"] > 0
    assert report["scores"][f"pixel_error/{data.keypoint_names[0]}"] >= 0
    assert "test split (2 labeled frames, pose_best.pth)" in err and "pixel error" in err
    table = (tmp_path / "logs" / "test_scores.txt").read_text()
    assert table.startswith("test split, 2 labeled frames") and f"{report['scores']['pixel_error/mean']:.3f}" in table

    folder = str(tmp_path / "data" / "labeled-data" / "video0")
    prediction = api.predict(str(config), input=folder, output=str(tmp_path / "all.csv"), show_progress=False)
    runner = CliRunner()
    scored = {}
    for name in ("train", "val", "test", "all"):
        out = runner.invoke(cli, ["evaluate", str(config), "--prediction", str(prediction), "--split", name,
                                  "--report", str(tmp_path / f"{name}.json")])
        assert out.exit_code == 0, out.output
        scored[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert [scored[n]["frames"] for n in ("train", "val", "test", "all")] == [4, 2, 2, 8]
    assert scored["test"]["split"] == "test"
    everything = api.evaluate(str(config), prediction=str(prediction))
    assert everything["frames"] == 8 and "training frames included" in capsys.readouterr().err


def test_missing_labeled_images_are_listed_before_training(tmp_path):
    import os

    import pytest

    from bioloop.data.synthetic_pose import make_pose_dataset
    from bioloop.errors import DataError
    from bioloop.tasks.pose.task import TASK

    data = make_pose_dataset(tmp_path / "data", n_frames=4, n_videos=2, video=False)
    for gone in (data.image_paths[1], data.image_paths[6]):
        os.remove(gone)
    cfg = api.load_config(str(_config(tmp_path, data)))
    with pytest.raises(DataError) as info:
        TASK.build_datasets(cfg)  # the trainer's set-up, before any batch
    message = str(info.value)
    assert "CollectedData.csv: 2 of the 8 labeled images/videos are missing" in message
    assert data.image_paths[1] in message and data.image_paths[6] in message
