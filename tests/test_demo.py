"""`bioloop demo` wiring: data, train, predict the held-out crop, evaluate, report (tiny settings)."""

from __future__ import annotations

import json

from click.testing import CliRunner

import bioloop.demo as demo
from bioloop.cli import cli


def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    tiny = ("iterations_per_epoch=2", "batch_size=2", "validation_batch_limit=2", "early_stopping=None",
            "num_workers=0", "load_model=None", "model_kwargs={'depth': 2, 'base_channels': 4}")
    monkeypatch.setattr(demo, "DEMO_OVERRIDES", tiny)
    result = CliRunner().invoke(cli, ["demo", "--output", str(tmp_path / "d"), "--epochs", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "[4/4] evaluating" in result.output and "nuc" in result.output
    report = json.loads((tmp_path / "d" / "evaluation.json").read_text())
    assert set(report["classes"]) == {"nuc", "mito"}
    assert (tmp_path / "d" / "prediction.zarr" / "nuc").is_dir()
    assert "TensorBoard logs" in result.output


def test_pose_demo_runs_end_to_end(tmp_path, monkeypatch):
    tiny = ("iterations_per_epoch=2", "batch_size=2", "num_workers=0", "load_model=None",
            "eval.predict_vids_after_training=False", "backbone='test_resnet'",
            "image_resize_dims={'height': 64, 'width': 80}", "validation_batch_limit=1")
    monkeypatch.setattr(demo, "POSE_OVERRIDES", tiny)
    result = CliRunner().invoke(cli, ["demo", "pose", "--output", str(tmp_path / "d"), "--epochs", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "[4/4] evaluating" in result.output and "tail_tip" in result.output
    report = json.loads((tmp_path / "d" / "evaluation.json").read_text())
    assert report["frames"] == 40
    assert (tmp_path / "d" / "heldout_video.labeled.mp4").exists() and (tmp_path / "d" / "heldout_video.slp").exists()
