"""Other tools' config files given to bioloop as written, `-s` in their spelling, `init --from`, complete checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bioloop import api
from bioloop.cli import cli
from bioloop.errors import ConfigError

DATA = Path(__file__).parent / "data"


def _copy(tmp_path, name, edit=None):
    text = (DATA / name).read_text()
    if edit:
        text = edit(text)
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_lightning_pose_config_yaml_loads_key_by_key(tmp_path):
    cfg = api.load_config(_copy(tmp_path, "lp_config.yaml"), echo=lambda _m: None)
    assert cfg.task == "pose" and cfg.source.spelling == "Lightning Pose"
    assert (cfg.epochs, cfg.batch_size, cfg.validation_batch_size, cfg.validate_every) == (300, 8, 16, 5)
    assert cfg.labels_file == "CollectedData.csv" and cfg.data_dir == str(tmp_path / "project")
    assert cfg.scheduler == {"type": "MultiStepLR", "params": {"milestones": [150, 200, 250], "gamma": 0.5}}
    assert cfg.backbone == "resnet18" and cfg.model is None and cfg.pose_model is None
    assert cfg.losses.temporal.warmup_epochs == 100 and cfg.losses.pca_multiview.components_to_keep == 3
    assert cfg.dali.base_predict_sequence_length == 96 and cfg.dali.context_train_batch_size == 16
    assert cfg.early_stopping is None  # training.early_stopping is absent (false): min_epochs changes nothing
    assert cfg.eval.confidence_thresh_for_vid == 0.9


def test_lightning_pose_model_section_is_never_read_as_deeplabcut(tmp_path):
    path = tmp_path / "lp.py"
    path.write_text("task = 'pose'\nvideo_dir = '.'\nmodel = {'backbone': 'resnet18', 'model_type': 'heatmap', "
                    "'losses_to_use': ['temporal']}\n")
    cfg = api.load_config(path)
    assert cfg.losses_to_use == ["temporal"] and cfg.pose_model is None and cfg.backbone == "resnet18"
    path.write_text("task = 'pose'\nmodel = {'layers': 3}\n")
    with pytest.raises(ConfigError, match="model: a dict that is not clearly Lightning Pose or DeepLabCut"):
        api.load_config(path)
    path.write_text("task = 'pose'\ntraining = {'max_epochs': 3}\nrunner = {'eval_interval': 2}\n")
    with pytest.raises(ConfigError, match=r"mix Lightning Pose keys \(training\) and DeepLabCut keys \(runner"):
        api.load_config(path)


def test_deeplabcut_defaults_pass_as_written(tmp_path):
    cfg = api.load_config(_copy(tmp_path, "dlc_pytorch_config.yaml"), echo=lambda _m: None)
    assert cfg.task == "pose" and cfg.source.spelling == "DeepLabCut"
    assert cfg.save_optimizer_state is False and cfg.keypoint_names == ["snout", "leftear", "rightear", "tailbase"]
    assert (cfg.key_metric, cfg.key_metric_mode, cfg.validate_every, cfg.epochs) == ("oks_map", "max", 10, 200)
    assert cfg.pose_model["backbone"]["model_name"] == "resnet18" and cfg.scheduler["type"] == "LRListScheduler"
    names = [type(t).__name__ for t in cfg.imgaug.transforms]
    assert names == ["Affine", "GaussNoise"]  # affine p 0.5, noise 12.75; hist_eq/motion_blur/covering off
    affine, noise = cfg.imgaug.transforms
    assert affine.p == 0.5 and tuple(affine.rotate) == (-30, 30) and noise.p == 0.5
    assert noise.std_range == pytest.approx((0.0, 12.75 / 255))


def test_a_gtr_yaml_loads_with_lightnings_meanings(tmp_path):
    cfg = api.load_config(_copy(tmp_path, "gtr_config.yaml"), echo=lambda _m: None)
    assert cfg.task == "tracking" and cfg.source.spelling == "DREEM/GTR"
    assert (cfg.epochs, cfg.key_metric, cfg.monitor, cfg.max_snapshots) == (100, "loss", ["num_switches"], 1)
    assert cfg.early_stopping.min_epochs == 10 and cfg.early_stopping.patience == 10
    assert cfg.optimizer["params"]["weight_decay"] == 0.01 and cfg.gtr.d_model == 64
    assert cfg.iterations_per_epoch is None and cfg.max_grad_norm is None  # limit 1.0, clip null


def test_errors_name_the_users_key_and_line(tmp_path):
    path = _copy(tmp_path, "gtr_config.yaml", lambda t: t.replace("max_epochs: 100", "max_epochs: 10.5")
                 .replace("  patience: 10\n", "  patience: 0\n"))
    with pytest.raises(ConfigError) as info:
        api.load_config(path, echo=lambda _m: None)
    text = str(info.value)
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if "max_epochs" in l)
    assert f"gtr_config.yaml: line {line}: trainer.max_epochs: expected an integer, got float 10.5" in text
    assert "early_stopping.patience: must be >= 1" in text and "epochs" not in text.replace("max_epochs", "")
    py = tmp_path / "gtr.py"
    py.write_text("task = 'tracking'\ntrainer = {\n    'max_epochs': 10.5,\n}\n")
    with pytest.raises(ConfigError, match=r"gtr.py: line 3: trainer.max_epochs: expected an integer"):
        api.load_config(py)


def test_overrides_address_the_settings_in_either_spelling(tmp_path):
    path = _copy(tmp_path, "gtr_config.yaml")
    cfg = api.load_config(path, ["trainer.max_epochs=5", "optimizer.lr=0.01", "early_stopping.patience=4"],
                          echo=lambda _m: None)
    assert (cfg.epochs, cfg.optimizer["params"]["lr"], cfg.early_stopping.patience) == (5, 0.01, 4)
    cfg = api.load_config(path, ["optimizer.params.lr=0.02", "epochs=6"], echo=lambda _m: None)
    assert (cfg.optimizer["params"]["lr"], cfg.epochs) == (0.02, 6)
    with pytest.raises(ConfigError, match=r"command line -s trainer.max_epochs=2.5: expected an integer"):
        api.load_config(path, ["trainer.max_epochs=2.5"], echo=lambda _m: None)
    py = tmp_path / "native.py"  # bioloop's own spelling in the file, Lightning's on the command line
    py.write_text("task = 'tracking'\noptimizer = {'type': 'Adam', 'params': {'lr': 1e-4}}\n"
                  "dataset = {'train_dataset': {'slp_files': ['a.slp']}}\n")
    cfg = api.load_config(py, ["trainer.max_epochs=3", "optimizer.params.lr=0.5"])
    assert cfg.epochs == 3 and cfg.optimizer == {"type": "Adam", "params": {"lr": 0.5}}
    pose = tmp_path / "pose.py"
    pose.write_text("task = 'pose'\nepochs = 9\n")
    cfg = api.load_config(pose, ["training.train_batch_size=3", "training.max_epochs=4"])
    assert (cfg.batch_size, cfg.epochs, cfg.source.spelling) == (3, 4, "Lightning Pose")
    cfg = api.load_config(pose, ["runner.eval_interval=2", "train_settings.epochs=5"])
    assert (cfg.validate_every, cfg.epochs, cfg.source.spelling) == (2, 5, "DeepLabCut")


def test_cross_field_checks_run_even_when_another_field_is_wrong(tmp_path):
    path = tmp_path / "seg.py"
    path.write_text("batch_size = 0\nload_model = 'lastest'\n")
    with pytest.raises(ConfigError) as info:
        api.load_config(path)
    assert {p.split(": ")[1] for p in info.value.problems} == {"batch_size", "load_model"}


def test_init_from_writes_an_equivalent_python_config(tmp_path):
    from bioloop.config.resolved import settings_table

    for name in ("lp_config.yaml", "dlc_pytorch_config.yaml", "gtr_config.yaml"):
        source = _copy(tmp_path, name)
        dest = tmp_path / "out" / f"{source.stem}.py"
        result = CliRunner().invoke(cli, ["init", "--from", str(source), str(dest)])
        assert result.exit_code == 0, result.output
        text = dest.read_text()
        assert "# " in text and "from line " in text
        ours, theirs = api.load_config(dest, echo=lambda _m: None), api.load_config(source, echo=lambda _m: None)
        a, b = settings_table(ours), settings_table(theirs)
        assert [(n, str(v)) for n, v, _ in a] == [(n, str(v)) for n, v, _ in b], name
    result = CliRunner().invoke(cli, ["init", "--from", str(source), str(dest)])
    assert result.exit_code == 2 and "already exists" in result.output


def test_config_check_validates_what_training_start_would(tmp_path):
    from bioloop.data.synthetic_pose import make_pose_dataset

    make_pose_dataset(tmp_path / "project", n_frames=4, n_videos=1, label_every=2, seed=0)
    cfg_path = tmp_path / "cfg.py"
    cfg_path.write_text("task = 'pose'\ndata_dir = 'project'\nbackbone = 'resnet18'\n")
    run = CliRunner().invoke(cli, ["config", "check", str(cfg_path)])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(cli, ["config", "check", str(cfg_path), "-s", "backbone=resnet18x"])
    assert run.exit_code == 2 and "unknown backbone (got 'resnet18x')" in run.output
    cfg_path.write_text("task = 'pose'\ndata_dir = 'project'\nmodel = {'backbone': {'type': 'ResNet', "
                        "'model_name': 'resnet18', 'output_stride': 16}, 'heads': {'bodypart': "
                        "{'type': 'HeatmapHead'}}}\n")
    run = CliRunner().invoke(cli, ["config", "check", str(cfg_path)])
    assert run.exit_code == 2 and "resnet18 cannot be dilated (got 16)" in run.output
    shutil.rmtree(tmp_path / "project" / "labeled-data")
    run = CliRunner().invoke(cli, ["config", "check", str(cfg_path)])
    assert run.exit_code == 2 and "labeled images: " in run.output and "not found" in run.output
    cfg_path.write_text("task = 'pose'\ndata_dir = 'nowhere'\n")
    run = CliRunner().invoke(cli, ["config", "check", str(cfg_path)])
    assert run.exit_code == 2 and "labels_file: 1 file not found" in run.output
    (tmp_path / "lp").mkdir()
    lp = _copy(tmp_path / "lp", "lp_config.yaml")  # its data_dir does not exist: named as the file spells it
    run = CliRunner().invoke(cli, ["config", "check", str(lp)])
    line = next(i for i, text in enumerate(lp.read_text().splitlines(), 1) if "csv_file" in text)
    assert run.exit_code == 2 and f"lp_config.yaml: line {line}: data.csv_file: 1 file not found" in run.output
    gtr = tmp_path / "gtr.py"
    gtr.write_text("task = 'tracking'\ndataset = {'train_dataset': {'slp_files': ['missing.slp']}}\n")
    run = CliRunner().invoke(cli, ["config", "check", str(gtr)])
    assert run.exit_code == 2 and "dataset.train_dataset.slp_files: 1 file not found" in run.output


def test_a_yaml_files_task_is_told_by_its_keys(tmp_path):
    gtr = tmp_path / "small.yaml"  # GTR's runner section is not DeepLabCut's
    gtr.write_text("runner:\n  metrics:\n    val: [num_switches]\ndataset:\n  train_dataset:\n    slp_files: [a.slp]\n"
                   "trainer:\n  max_epochs: 2\n")
    assert api.load_config(gtr).task == "tracking"
    odd = tmp_path / "odd.yaml"
    odd.write_text("epochs: 3\n")
    with pytest.raises(ConfigError, match="not recognised as a Lightning Pose, DeepLabCut or DREEM/GTR config"):
        api.load_config(odd)
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  max_epochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d: not valid YAML"):
        api.load_config(bad)
