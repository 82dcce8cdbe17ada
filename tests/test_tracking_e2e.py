"""Tracking end to end: train on synthetic SLEAP data -> predict .slp / CTC / MOT that read back -> evaluate."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bioloop import api
from bioloop.tasks.tracking import io

pytestmark = pytest.mark.usefixtures("one_thread")

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from bioloop.data.synthetic_tracking import make_tracking_dataset

    root = tmp_path_factory.mktemp("e2e")
    data = make_tracking_dataset(root / "data", n_frames=20, n_objects=3, image_size=(64, 80))
    cfg = root / "cfg.py"
    cfg.write_text(f"""
task = "tracking"
model = {{"d_model": 16, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_layers_attn_head": 1,
         "encoder_cfg": {{"model_name": "test_resnet", "in_chans": 3}}}}
dataset = {{"train_dataset": {{"slp_files": [{data.slp_path!r}], "crop_size": 16, "padding": 0, "clip_length": 8}}}}
runner = {{"metrics": {{"test": ["num_switches", "mota", "idf1"]}}}}
tracker = {{"window_size": 4}}
epochs = 2
batch_size = 2
iterations_per_epoch = 1
num_workers = 0
logs_save_path = "runs/logs"
model_save_path = "runs/ckpt/{{model_name}}_{{epoch}}.pth"
""")
    result = api.train(str(cfg), quiet=True)
    return data, api.load_config(str(cfg)), result


def test_training_writes_a_checkpoint(run):
    _, _, result = run
    assert result["epochs_completed"] == 2 and result["optimizer_steps"] == 2
    assert os.path.isfile(os.path.join(result["checkpoint_dir"], "gtr_2.pth"))


def test_predict_slp_reads_back_with_every_instance_tracked(run, tmp_path):
    data, cfg, _ = run
    out = api.predict(cfg, input=data.slp_path, output=str(tmp_path / "tracked.slp"), show_progress=False)
    seq = io.read_slp(out)[0]
    truth = io.read_slp(data.slp_path)[0]
    assert len(seq) == len(truth) == 20
    for got, want in zip(seq.frames, truth.frames):
        assert len(got) == len(want) and (got.track_ids >= 0).all()
        np.testing.assert_allclose(got.points, want.points)
    report = tmp_path / "report.json"
    result = api.evaluate(cfg, prediction=str(out), truth=data.slp_path, report=str(report))
    assert set(result["metrics"]) == {"num_switches", "mota", "idf1", "HOTA", "DetA", "AssA", "DetRe", "DetPr",
                                      "AssRe", "AssPr", "LocA"}
    assert result["metrics"]["mota"] <= 1.0 and "num_switches" in result["table"]
    assert json.loads(report.read_text())["metrics"] == result["metrics"]


def test_predict_ctc_passes_the_checks_and_scores_det_tra(run, tmp_path):
    data, cfg, _ = run
    out = api.predict(cfg, input=data.ctc_root, output=str(tmp_path / "01_RES"), show_progress=False)
    assert io.check_ctc(out) == []
    seq, table = io.read_ctc(out)
    assert len(seq) == 20 and len(table) >= 3
    result = api.evaluate(cfg, prediction=str(out), truth=data.ctc_tra_dir)
    assert result["metrics"]["DET"] == 1.0 and 0 < result["metrics"]["TRA"] <= 1


def test_predict_mot_reads_back(run, tmp_path):
    data, cfg, _ = run
    out = api.predict(cfg, input=data.mot_txt, output=str(tmp_path / "res.txt"), show_progress=False)
    seq = io.read_mot(out)
    truth = io.read_mot(data.mot_txt)
    assert sum(len(f) for f in seq.frames) == sum(len(f) for f in truth.frames)
    result = api.evaluate(cfg, prediction=str(out), truth=data.mot_txt, match="centroid", match_threshold=2.0)
    n_gt = sum(len(f) for f in truth.frames)  # every box matches (no misses, no false positives): switches cost
    assert result["metrics"]["mota"] == pytest.approx(1 - result["metrics"]["num_switches"] / n_gt)
