"""`bioloop predict` / `evaluate` / `synthetic` for the pose task, through the command line."""

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from bioloop import api
from bioloop.cli import cli


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _trained(tmp_path):
    from bioloop.data.synthetic_pose import make_pose_dataset

    data = make_pose_dataset(tmp_path / "data", n_frames=4, n_videos=2)
    config = tmp_path / "pose.py"
    config.write_text(f"""
task = "pose"
data_dir = {str(data.root)!r}
image_resize_dims = {{"height": 64, "width": 80}}
backbone = "test_resnet"
train_prob = 0.5
val_prob = 0.5
unfreezing_epoch = 0
batch_size = 2
epochs = 1
iterations_per_epoch = 1
load_model = None
eval = {{"predict_vids_after_training": False}}
model_save_path = {str(tmp_path / 'ck' / '{model_name}_{epoch}.pth')!r}
logs_save_path = {str(tmp_path / 'logs')!r}
""")
    api.train(str(config), quiet=True)
    return data, config


def test_predict_and_evaluate_from_the_command_line(tmp_path):
    data, config = _trained(tmp_path)
    out = tmp_path / "video0.csv"
    result = _run("predict", config, "--input", data.video_paths[0], "--output", out, "--slp", tmp_path / "v.slp",
                  "--save-video", "-q")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out, header=[0, 1, 2], index_col=0).shape == (4, 3 * len(data.keypoint_names))
    assert (tmp_path / "v.slp").exists() and (tmp_path / "video0.labeled.mp4").exists()
    folder = Path(data.image_paths[0]).parent
    assert _run("predict", config, "--input", folder, "--output", tmp_path / "f.csv", "-q").exit_code == 0
    scored = _run("evaluate", config, "--prediction", tmp_path / "f.csv", "--report", tmp_path / "r.json")
    assert scored.exit_code == 0, scored.output
    assert "pixel error" in scored.output and "tail_tip" in scored.output and (tmp_path / "r.json").exists()


def test_other_tasks_flags_are_errors_not_ignored(tmp_path):
    data, config = _trained(tmp_path)
    result = _run("predict", config, "--input", data.video_paths[0], "--output", tmp_path / "x.csv", "--tta")
    assert result.exit_code == 2 and "--tta do not apply to the pose task" in result.output
    result = _run("evaluate", config, "--prediction", tmp_path / "x.csv", "--crops", "d.csv")
    assert result.exit_code == 2 and "--crops do not apply to the pose task" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_synthetic_pose_layout(tmp_path):
    result = _run("synthetic", tmp_path / "p", "--layout", "pose", "--animals", "2")
    assert result.exit_code == 0, result.output
    header = pd.read_csv(tmp_path / "p" / "CollectedData.csv", header=[0, 1, 2, 3], index_col=0).columns
    assert set(header.get_level_values(1)) == {"animal0", "animal1"}
    assert len(list((tmp_path / "p" / "videos").glob("*.mp4"))) == 20
