"""Pose end to end: synthetic videos -> api.train -> api.predict on an unseen video -> api.evaluate < 3 px.

The held-out frames come from a video rendered with another seed (its own floor, post, animal size and
path), so the score measures generalisation, not memorisation. What makes this learn in about 100 s (2 cores)
from scratch (nothing is pretrained offline):
- many short training videos (20 x 8 frames) rather than a few long ones: scene variety matters far more
  than frame count (2 videos x 40 frames: ~25 px on a new video; 20 x 8: ~3 px);
- ``heatmap_loss_type = "kl"`` (softmax heatmaps): the "mse" loss against peak-1 Gaussians first collapses
  to all-zero maps (loss = target energy ~ pi*sigma^2/(Hh*Wh)) and barely moves in a few hundred steps;
- plain Adam: the default RAdam rectifies (damps) its first ~hundreds of steps, most of this budget;
- a cosine learning-rate decay, ``unfreezing_epoch = 0`` and a light timm backbone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bioloop import api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# found by the search recorded in the report; the images are rendered at 128 x 160
SETTINGS = {
    "backbone": "mobilenetv3_large_075",
    "image_resize_dims": {"height": 128, "width": 160},
    "downsample_factor": 2,
    "heatmap_loss_type": "kl",
    "heatmap_sigma": 1.5,
    "imgaug": "dlc-lr",
    "unfreezing_epoch": 0,
    "batch_size": 8,
    "epochs": 20,
    "iterations_per_epoch": 20,
    "learning_rate": 4e-3,
    "optimizer": {"type": "Adam"},
    "scheduler": {"type": "CosineAnnealingLR", "params": {"T_max": 20, "eta_min": 1e-4}},
}
TRAIN_VIDEOS, TRAIN_FRAMES = 20, 8
MAX_ERROR_PX = 3.0
# measured ~100 s wall (177 s process CPU, 2 threads) on the 2-core dev box with load ~2; another training job
# on the same cores makes it several times slower, so the bound is generous and can be raised for loaded boxes


def _write_config(tmp_path: Path, data) -> Path:
    settings = {
        "task": "pose", "data_dir": data.root, "keypoint_names": list(data.keypoint_names),
        "train_prob": 1.0, "val_prob": 0.0,  # every labeled frame trains; scoring uses the unseen video
        **SETTINGS,
        "random_seed": 42, "load_model": None, "model_name": "pose", "save_every_n_epochs": 1000,
        "model_save_path": str(tmp_path / "ck" / "{model_name}_{epoch}.pth"),
        "logs_save_path": str(tmp_path / "logs"),
    }
    path = tmp_path / "pose.py"
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in settings.items()))
    return path


def test_pose_learns_synthetic_keypoints_to_under_3px(tmp_path):
    import torch

    from bioloop.data.synthetic_pose import make_pose_dataset

    start, cpu = time.perf_counter(), time.process_time()
    train = make_pose_dataset(tmp_path / "train", n_frames=TRAIN_FRAMES, n_videos=TRAIN_VIDEOS, seed=0,
                              video=False)
    test = make_pose_dataset(tmp_path / "test", n_frames=30, n_videos=1, seed=7, video=False)
    config = _write_config(tmp_path, train)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the same work on any machine
    try:
        result = api.train(str(config), quiet=True)
        assert result["epochs_completed"] == SETTINGS["epochs"]
        folder = Path(test.root) / "labeled-data" / "video0"
        prediction = api.predict(str(config), input=str(folder), output=str(tmp_path / "pred.csv"),
                                 show_progress=False)
        scores = api.evaluate(str(config), prediction=str(prediction), truth=test.csv_path,
                              report=str(tmp_path / "report.json"))
    finally:
        torch.set_num_threads(threads)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu

    error = scores["scores"]["pixel_error/mean"]
    likelihood = pd.read_csv(prediction, header=[0, 1, 2], index_col=0).xs("likelihood", axis=1, level=2)
    print(f"\n{scores['table']}\nheld-out pixel_error/mean = {error:.2f} px, mean likelihood = "
          f"{float(np.nanmean(likelihood.to_numpy())):.3f}, {seconds:.1f} s wall, {cpu:.1f} s CPU")
    assert scores["frames"] == 30
    assert error < MAX_ERROR_PX, scores["table"]
    assert float(np.nanmean(likelihood.to_numpy())) > 0.5  # a trained model is confident on clean frames
