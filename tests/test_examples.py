"""Every annotated example checks, and trains on the data the project generates (tiny overrides)."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bioloop.cli import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "bioloop" / "examples"
TINY = ["-s", "epochs=1", "-s", "iterations_per_epoch=1", "-s", "validation_batch_limit=1", "-s", "batch_size=1",
        "-s", "num_workers=0", "-q"]


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_init_lists_every_segmentation_example():
    result = _run("init")
    for name in ("segmentation_2d", "segmentation_3d", "segmentation_dense_em", "segmentation_allen_unet_xy",
                 "segmentation_s3", "pose_heatmap",
                 "pose_regression", "pose_semisupervised", "pose_topdown", "tracking_sleap", "tracking_microscopy_ctc"):
        assert name in result.output


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.py")))
def test_example_checks(name):
    """The settings of every template are valid; the only thing missing is the data they point at
    (made by `bioloop synthetic`), which `config check` reports as it would for a user."""
    result = _run("config", "check", EXAMPLES / f"{name}.py")
    problems = [line for line in result.output.splitlines()
                if line.startswith(("error:", "  - ")) and "problems in the configuration" not in line]
    assert result.exit_code == 0 or problems and all("not found" in p for p in problems), result.output


@pytest.mark.parametrize("name,overrides", [
    ("segmentation_2d", ["-s", "model_kwargs={'depth': 2, 'base_channels': 2}"]),
    ("segmentation_3d", ["-s", "model_kwargs={'depth': 2, 'base_channels': 2}",
                         "-s", "input_array_info={'shape': (8, 32, 32), 'scale': (8, 8, 8)}"]),
])
def test_cellmap_examples_train_on_synthetic_data(name, overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run("synthetic", "data").exit_code == 0
    shutil.copy(EXAMPLES / f"{name}.py", tmp_path / "cfg.py")
    if name == "segmentation_3d":
        (tmp_path / "data" / "datasplit.csv").unlink()  # the example generates it from its datasplit section
    result = _run("train", "cfg.py", *TINY, *overrides)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "datasplit.csv").exists()


def test_dense_em_example_trains_predicts_and_processes_on_synthetic_cells(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run("synthetic", "data", "--layout", "cells").exit_code == 0
    shutil.copy(EXAMPLES / "segmentation_dense_em.py", tmp_path / "cfg.py")
    small = ["-s", "model_kwargs={'depth': 2, 'base_channels': 2}",
             "-s", "input_array_info={'shape': (4, 32, 32), 'scale': (8, 8, 8)}"]
    assert _run("train", "cfg.py", *TINY, *small).exit_code == 0
    roi = ["--roi", "0:32,848:1040,640:840"]
    result = _run("predict", "cfg.py", "--input", "data/cells.zarr/raw", "--output", "aff.zarr", *roi, "-q", *small)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "aff.zarr").glob("neuron_aff*"))) == 9
    result = _run("process", "cfg.py", "--input", "aff.zarr", "--output", "neurons.zarr", "-q", *small)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "neurons.zarr" / "neuron").exists()


def test_allen_example_trains_on_synthetic_tifs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run("synthetic", "allen_data", "--layout", "allen").exit_code == 0
    shutil.copy(EXAMPLES / "segmentation_allen_unet_xy.py", tmp_path / "cfg.py")
    result = _run("train", "cfg.py", *TINY, "-s", "model_kwargs={'base_channels': 2}", "-s", "patch_per_buffer=2",
                  "-s", "input_array_info={'shape': (29, 92, 92), 'scale': (290, 108, 108)}",
                  "-s", "target_array_info={'shape': (1, 4, 4), 'scale': (290, 108, 108)}")
    assert result.exit_code == 0, result.output
    bad = _run("train", "cfg.py", *TINY, "-s", "target_array_info={'shape': (8, 21, 21), 'scale': (290, 108, 108)}")
    assert bad.exit_code == 2 and "(36, 108, 108)" in bad.output and "(8, 20, 20)" in bad.output


POSE_TINY = ["-s", "backbone='test_resnet'", "-s", "image_resize_dims={'height': 64, 'width': 80}",
             "-s", "eval.predict_vids_after_training=False"]


TD_TINY = ["-s", "detector.variant='fasterrcnn_mobilenet_v3_large_320_fpn'", "-s", "detector.epochs=1",
           "-s", "detector.batch_size=2", "-s", "detector.crop_size={'height': 64, 'width': 64}"]


@pytest.mark.parametrize("name", ["pose_heatmap", "pose_regression", "pose_semisupervised", "pose_topdown"])
def test_pose_examples_train_on_synthetic_data(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import torch

    from bioloop.data.synthetic_pose import make_pose_dataset

    if name == "pose_topdown":  # `bioloop synthetic data/pose_multi --layout pose --animals 2`
        make_pose_dataset(tmp_path / "data" / "pose_multi", n_frames=4, n_videos=2, n_animals=2, image_size=(96, 128))
    else:  # `bioloop synthetic data/pose --layout pose`
        make_pose_dataset(tmp_path / "data" / "pose", n_frames=8, n_videos=2)
    shutil.copy(EXAMPLES / f"{name}.py", tmp_path / "cfg.py")
    extra = {"pose_semisupervised": ["-s", "dali.context_train_batch_size=2"], "pose_topdown": TD_TINY}.get(name, [])
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if name == "pose_topdown" else threads)  # small detector steps: fastest on one thread
    try:
        result = _run("train", "cfg.py", *TINY, *POSE_TINY, *extra)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "logs" / name / "split.csv").exists()
    if name == "pose_topdown":
        assert (tmp_path / "runs" / "checkpoints" / "detector" / "detector-001.pt").is_file()


TRACKING_TINY = """
# tiny test settings (the GTR `trainer` and `model` sections take precedence over -s)
trainer = {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1}
model = {**model, "d_model": 16, "nhead": 2,
         "encoder_cfg": {**model["encoder_cfg"], "model_name": "test_resnet", "backend": "timm"}}
"""


@pytest.mark.parametrize("name", ["tracking_sleap", "tracking_microscopy_ctc"])
def test_tracking_examples_train_on_synthetic_data(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import torch

    from bioloop.data.synthetic_tracking import make_tracking_dataset

    make_tracking_dataset(tmp_path / "data" / "tracking", n_frames=40)  # `bioloop synthetic data/tracking --layout tracking`
    (tmp_path / "cfg.py").write_text((EXAMPLES / f"{name}.py").read_text() + TRACKING_TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = _run("train", "cfg.py", "-q", "-s", "batch_size=1")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "best num_switches" in result.output
