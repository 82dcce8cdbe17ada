"""Tracking on the command line: synthetic data, view-batch, train, predict (--format), evaluate, refused flags."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from bioloop.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    old = os.getcwd()
    os.chdir(root)
    try:
        result = _run("synthetic", "data", "--layout", "tracking", "--animals", "3")
        assert result.exit_code == 0, result.output
        assert "data/tracking.slp" in result.output and "data/ctc" in result.output
        (root / "cfg.py").write_text("""
task = "tracking"
model = {"d_model": 16, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_layers_attn_head": 1,
         "encoder_cfg": {"model_name": "test_resnet", "in_chans": 3}}
dataset = {"train_dataset": {"slp_files": ["data/tracking.slp"], "video_files": ["data/tracking.mp4"],
                             "crop_size": 16, "padding": 0, "clip_length": 8}}
tracker = {"window_size": 4}
epochs = 1
batch_size = 1
iterations_per_epoch = 1
num_workers = 0
logs_save_path = "runs/logs"
model_save_path = "runs/ckpt/{model_name}_{epoch}.pth"
""")
        result = _run("train", root / "cfg.py", "-q")
        assert result.exit_code == 0, result.output
    finally:
        os.chdir(old)
    return root


def test_view_batch_writes_a_png(trained):
    result = _run("view-batch", trained / "cfg.py", "-s", "view_batch.num_frames=2")
    assert result.exit_code == 0, result.output
    png = trained / "runs" / "logs" / "view_batch.png"
    assert str(png) in result.output and png.read_bytes()[:4] == b"\x89PNG"


def test_predict_and_evaluate(trained, tmp_path):
    slp = trained / "data" / "tracking.slp"
    out = tmp_path / "tracks.txt"
    result = _run("predict", trained / "cfg.py", "--input", slp, "--output", out, "--format", "mot", "-q")
    assert result.exit_code == 0, result.output
    assert f"tracks written to {out}" in result.output and out.read_text().startswith("1,")
    again = _run("predict", trained / "cfg.py", "--input", slp, "--output", out, "--format", "mot", "-q")
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    tracked = tmp_path / "tracked.slp"
    assert _run("predict", trained / "cfg.py", "--input", slp, "--output", tracked, "-q").exit_code == 0
    report = tmp_path / "r.json"
    result = _run("evaluate", trained / "cfg.py", "--prediction", tracked, "--truth", slp, "--report", report)
    assert result.exit_code == 0, result.output
    assert "num_switches" in result.output and "mota" in result.output and "idf1" in result.output
    assert set(json.loads(report.read_text())["metrics"]) == {"num_switches", "mota", "idf1", "HOTA", "DetA", "AssA",
                                                              "DetRe", "DetPr", "AssRe", "AssPr", "LocA"}
    result = _run("evaluate", trained / "cfg.py", "--prediction", tracked, "--truth", slp, "--match", "centroid")
    assert result.exit_code == 2 and "centroid matching needs a distance in pixels" in result.output


def test_video_remap_for_predict_view_batch_and_evaluate(trained, tmp_path):
    """A .slp made on another machine: its video path is dead; --video OLD=NEW (or a folder) remaps it
    for every command, and the tracked .slp points at the video actually read."""
    import sleap_io as sio

    labels = sio.load_slp(str(trained / "data" / "tracking.slp"), open_videos=False)
    labels.videos[0].replace_filename("/lab/pc/videos/tracking.mp4", open=False)
    moved = tmp_path / "labels" / "tracking.slp"
    moved.parent.mkdir()
    sio.save_slp(labels, str(moved), verbose=False)
    videos = trained / "data"
    cfg = tmp_path / "cfg.py"
    cfg.write_text((trained / "cfg.py").read_text().replace('["data/tracking.slp"], "video_files": ["data/tracking.mp4"]',
                                                            f'[{str(moved)!r}]')
                   .replace('"runs/', f'"{tmp_path}/runs/'))
    out = tmp_path / "tracked.slp"
    result = _run("predict", trained / "cfg.py", "--input", moved, "--output", out, "--video",
                  f"/lab/pc/videos={videos}", "-q")
    assert result.exit_code == 0, result.output
    assert sio.load_slp(str(out), open_videos=False).videos[0].filename == str(videos / "tracking.mp4")
    result = _run("view-batch", cfg, "--video", videos)
    assert result.exit_code == 0 and "view_batch.png" in result.output, result.output
    result = _run("view-batch", cfg)  # without the remap the frames cannot be read: says how to fix it
    assert result.exit_code == 1 and "video file not found: /lab/pc/videos/tracking.mp4" in result.output
    result = _run("evaluate", trained / "cfg.py", "--prediction", out, "--truth", moved, "--video", videos)
    assert result.exit_code == 0 and "mota" in result.output, result.output


def test_refused_options_and_formats(trained, tmp_path):
    cfg, slp = trained / "cfg.py", trained / "data" / "tracking.slp"
    result = _run("predict", cfg, "--input", slp, "--output", tmp_path / "x.slp", "--tta", "--save-video")
    assert result.exit_code == 2 and "--tta, --save-video do not apply to the tracking task" in result.output
    result = _run("predict", cfg, "--input", slp, "--output", tmp_path / "res", "--format", "ctc")
    assert result.exit_code == 2 and "CTC results need label masks" in result.output
    result = _run("predict", cfg, "--input", trained / "data" / "tracking.mp4", "--output", tmp_path / "y.slp")
    assert result.exit_code == 2 and "a video needs its detections" in result.output
    result = _run("evaluate", cfg, "--prediction", slp, "--truth", slp, "--kind", "instance")
    assert result.exit_code == 2 and "do not apply to the tracking task" in result.output
    seg = tmp_path / "seg.py"
    seg.write_text("task = 'segmentation'\n")
    result = _run("view-batch", seg)
    assert result.exit_code == 2 and "view-batch does not apply to the segmentation task" in result.output
    result = _run("predict", seg, "--input", "x", "--output", tmp_path / "o", "--detections", "d.slp")
    assert result.exit_code == 2 and "--detections do not apply to the segmentation task" in result.output
