"""Segmentation commands end to end through the CLI: datasplit, predict (sharded), process, evaluate."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from bioloop.cli import cli
from bioloop.data.ngff import open_volume


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(em_data, tmp_path_factory):
    from tests.conftest import SEG_CONFIG

    folder = tmp_path_factory.mktemp("segcli")
    config = folder / "seg.py"
    config.write_text(SEG_CONFIG.format(datasplit=em_data.datasplit_path, epochs=1, ipe=2)
                      + "process = {'instance_classes': ['nuc'], 'min_size': 5}\n")
    result = _run("train", config, "-q")
    assert result.exit_code == 0, result.output
    return config


def test_datasplit_command_writes_a_split_by_dataset(em_data, tmp_path):
    out = tmp_path / "split.csv"
    search = em_data.zarr_path + "/recon-1/{name}"
    result = _run("datasplit", "--search-path", search, "--classes", "nuc,mito", "--csv-path", out)
    assert result.exit_code == 0, result.output
    assert "train" in result.output and out.exists()
    bad = _run("datasplit", "--search-path", search, "--classes", "nuc", "--validation-prob", "1.5")
    assert bad.exit_code != 0 and "validation_prob" in bad.output


def test_predict_process_evaluate(trained, em_data, tmp_path):
    pred, labels = tmp_path / "pred.zarr", tmp_path / "labels.zarr"
    roi = ",".join(f"{a:g}:{b:g}" for a, b in zip(*em_data.test_roi))
    result = _run("predict", trained, "--input", em_data.raw_path, "--output", pred, "--roi", roi, "--tta", "-q",
                  "--block-shape", "4,32,32")
    assert result.exit_code == 0, result.output
    result = _run("process", trained, "--input", pred, "--output", labels, "-q")
    assert result.exit_code == 0, result.output
    nuc = open_volume(f"{labels}/nuc")
    assert nuc.dtype == np.uint32 and open_volume(f"{labels}/mito").dtype == np.uint8
    report, figure = tmp_path / "report.json", tmp_path / "fig" / "slice.png"
    result = _run("evaluate", trained, "--prediction", labels, "--truth", em_data.test_crop_path, "--report", report,
                  "--figure", figure)
    assert result.exit_code == 0, result.output
    assert f"figure written to {figure}" in result.output
    import matplotlib.image

    picture = matplotlib.image.imread(figure)  # raw (recorded by predict, kept by process), truth, prediction
    assert picture.shape[1] > 1.25 * picture.shape[0] and picture[..., :3].std() > 0.05  # 2 rows of 3 panels
    scores = json.loads(report.read_text())
    assert "nuc" in scores["classes"] and report.with_suffix(".csv").exists()
    assert "pq" in result.output.lower() or "f1" in result.output.lower()
    again = _run("process", trained, "--input", pred, "--output", labels)
    assert again.exit_code == 1 and "already exists" in again.output


def test_evaluate_needs_truth_or_crops(trained, tmp_path):
    result = _run("evaluate", trained, "--prediction", tmp_path / "p.zarr")
    assert result.exit_code == 2 and "--truth" in result.output


def test_predict_with_two_processes_equals_one(trained, em_data, tmp_path):
    env = {**os.environ, "BIOLOOP_PROGRESS": "0"}
    roi = "0:32,0:600,0:600"
    common = [sys.executable, "-m", "bioloop", "predict", str(trained), "--input", em_data.raw_path, "--roi", roi,
              "--block-shape", "4,32,32", "-q"]
    one = subprocess.run([*common, "--output", str(tmp_path / "one.zarr")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*common, "--output", str(tmp_path / "two.zarr"), "--devices", "2"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    for name in ("nuc", "mito"):
        a, b = open_volume(tmp_path / "one.zarr" / name), open_volume(tmp_path / "two.zarr" / name)
        np.testing.assert_allclose(a.read((0, 0, 0), a.spatial_shape), b.read((0, 0, 0), b.spatial_shape), atol=1e-6)
