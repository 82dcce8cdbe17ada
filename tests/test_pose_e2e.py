"""Pose end to end: synthetic videos -> api.train -> api.predict on an unseen video -> api.evaluate < 5 px.

The held-out frames come from a video rendered with another seed (its own floor, post, animal size and
path), so the score measures generalisation, not memorisation. What makes this learn in a few hundred
steps from scratch on CPU (nothing is pretrained offline):
- many short training videos (20 x 8 frames) rather than a few long ones: scene variety matters far more
  than frame count (2 videos x 40 frames: ~25 px on a new video; 20 x 8: ~3 px);
- ``heatmap_loss_type = "kl"`` (softmax heatmaps): the "mse" loss against peak-1 Gaussians first collapses
  to all-zero maps (loss = target energy ~ pi*sigma^2/(Hh*Wh)) and barely moves in a few hundred steps;
- plain Adam: the default RAdam rectifies (damps) its first ~hundreds of steps, most of this budget;
- a cosine learning-rate decay, ``unfreezing_epoch = 0`` and timm's tiny ``test_resnet`` at the full
  128 x 160 (71 s CPU with one thread; mobilenetv3_large_075 took 177 s for 2.645 px on one machine and
  3.13 px on another, a spread that could not be measured here in reasonable time).

Spread, measured with ``PYTHONPATH=$PWD python tools/pose_learning_spread.py --seeds 42 0 1 --threads 1 2``
(one 2-core box; CPU float results depend on the thread count and the machine, so no run is bit-exact
elsewhere): held-out mean pixel error

    seed   1 thread   2 threads
    42     3.968      3.325
    0      2.361      2.455
    1      2.564      2.509

so 2.36-3.97 px (the mean pose of the training labels scores 40.1 px). The bound, 5 px, is the worst
run plus 1 px. The confidence checks hold in every run with margin: AUROC of "hidden by the post or out
of the image" against 1 - likelihood 0.839-0.949 (bound 0.75); AUROC of "visible keypoint more than
5 px off" 0.757-0.917 (bound 0.65; 12-34 such keypoints of 207); median likelihood of visible keypoints
0.882-0.933, of hidden ones 0.569-0.679 (bound: at least 0.15 below the visible median).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bioloop import api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# found by the search recorded in the report; the images are rendered at 128 x 160
SETTINGS = {
    "backbone": "test_resnet",
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
MAX_ERROR_PX = 5.0  # the measured spread is in the module docstring


def _write_config(tmp_path: Path, data, seed: int = 42) -> Path:
    settings = {
        "task": "pose", "data_dir": data.root, "keypoint_names": list(data.keypoint_names),
        "train_prob": 1.0, "val_prob": 0.0,  # every labeled frame trains; scoring uses the unseen video
        **SETTINGS,
        "random_seed": seed, "load_model": None, "model_name": "pose", "save_every_n_epochs": 1000,
        "model_save_path": str(tmp_path / "ck" / "{model_name}_{epoch}.pth"),
        "logs_save_path": str(tmp_path / "logs"),
    }
    path = tmp_path / "pose.py"
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in settings.items()))
    return path


def train_and_score(tmp_path: Path, *, seed: int = 42, threads: int = 2) -> dict:
    """Train on the 20 generated videos, predict the unseen one, score it; the numbers the test checks.

    Also used by ``tools/pose_learning_spread.py`` to measure the spread over seeds and thread counts.
    """
    import torch
    from sklearn.metrics import roc_auc_score

    from bioloop.data.synthetic_pose import make_pose_dataset
    from bioloop.tasks.pose.labels import read_labels

    start, cpu = time.perf_counter(), time.process_time()
    train = make_pose_dataset(tmp_path / "train", n_frames=TRAIN_FRAMES, n_videos=TRAIN_VIDEOS, seed=0,
                              video=False)
    test = make_pose_dataset(tmp_path / "test", n_frames=30, n_videos=1, seed=7, video=False)
    config = _write_config(tmp_path, train, seed)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = api.train(str(config), quiet=True)
        folder = Path(test.root) / "labeled-data" / "video0"
        prediction = api.predict(str(config), input=str(folder), output=str(tmp_path / "pred.csv"),
                                 show_progress=False)
        scores = api.evaluate(str(config), prediction=str(prediction), truth=test.csv_path,
                              report=str(tmp_path / "report.json"))
    finally:
        torch.set_num_threads(before)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    pred = read_labels(prediction)
    table = pd.read_csv(prediction, header=[0, 1, 2], index_col=0)
    conf = table.xs("likelihood", axis=1, level=2).to_numpy(dtype=np.float64)  # (frames, K)
    truth = test.keypoints[:, 0]  # (frames, K, 2), NaN where the post hides a keypoint or it left the image
    hidden = ~np.isfinite(truth).all(-1)
    error = np.linalg.norm(pred.keypoints[:, 0] - truth, axis=-1)
    wrong = error[~hidden] > 5.0
    return {"epochs": result["epochs_completed"], "frames": scores["frames"], "table": scores["table"],
            "error": scores["scores"]["pixel_error/mean"], "seconds": seconds, "cpu": cpu,
            "conf_visible": float(np.median(conf[~hidden])), "conf_hidden": float(np.median(conf[hidden])),
            "auroc_hidden": float(roc_auc_score(hidden.ravel(), 1.0 - conf.ravel())),
            "wrong": int(wrong.sum()), "visible": int((~hidden).sum()),
            "auroc_error": float(roc_auc_score(wrong, 1.0 - conf[~hidden])) if 0 < wrong.sum() < wrong.size
            else float("nan")}


def test_pose_learns_synthetic_keypoints_to_under_5px_with_confidences_that_rank_errors(tmp_path):
    got = train_and_score(tmp_path)
    print(f"\n{got['table']}\nheld-out pixel_error/mean = {got['error']:.2f} px; median likelihood "
          f"{got['conf_visible']:.3f} visible, {got['conf_hidden']:.3f} hidden; AUROC hidden {got['auroc_hidden']:.3f}, "
          f"error > 5 px {got['auroc_error']:.3f} ({got['wrong']} of {got['visible']}); "
          f"{got['seconds']:.1f} s wall, {got['cpu']:.1f} s CPU")
    assert got["epochs"] == SETTINGS["epochs"] and got["frames"] == 30
    assert got["error"] < MAX_ERROR_PX, got["table"]
    assert got["conf_visible"] > 0.5  # a trained model is confident on clean frames
    # hidden keypoints (uniform targets in training) get low likelihoods; likelihood ranks the errors
    assert got["conf_hidden"] < got["conf_visible"] - 0.15
    assert got["auroc_hidden"] > 0.75
    if got["wrong"]:  # 12-34 of 207 in the measured runs; with none there is nothing to rank
        assert got["auroc_error"] > 0.65
