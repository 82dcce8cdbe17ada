"""Train a two-camera synthetic project with and without pca_multiview and print each view's test-split error.

    PYTHONPATH=$PWD python tools/pose_multiview_learning.py --epochs 15 --seeds 0 1

The data: ``make_multiview_pose_dataset`` (12 sessions x 12 frames, 64 x 64, the second camera an affine
view of the first); split 0.7 / 0.15 / 0.15 by session, so the test sessions are unseen. The mean training
pose (per view) is printed as the baseline a model must beat.

Measured once (``--epochs 15 --seeds 0``, one thread, a loaded 2-core box), test-split mean pixel error:

    losses           top     side    seconds   (mean pose: top 16.94, side 14.91)
    none             3.58    3.98     87
    pca_multiview    3.53    3.57    201

One seed: the difference between the two rows is within what other seeds could change; it is not a
measured benefit of pca_multiview.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def run(root: Path, seed: int, epochs: int, losses: list[str]) -> dict:
    from bioloop import api
    from bioloop.data.synthetic_pose import make_multiview_pose_dataset

    data = make_multiview_pose_dataset(root / "data", n_frames=12, n_sessions=12, image_size=(64, 64), seed=0)
    settings = {"task": "pose", "data_dir": data.root, "labels_file": [Path(p).name for p in data.csv_paths],
                "view_names": list(data.view_names), "backbone": "test_resnet",
                "image_resize_dims": {"height": 64, "width": 64}, "heatmap_loss_type": "kl", "heatmap_sigma": 1.5,
                "imgaug": "default", "unfreezing_epoch": 0, "batch_size": 8, "epochs": epochs,
                "iterations_per_epoch": 20, "learning_rate": 4e-3, "optimizer": {"type": "Adam"},
                "scheduler": {"type": "CosineAnnealingLR", "params": {"T_max": epochs, "eta_min": 1e-4}},
                "train_prob": 0.7, "val_prob": 0.15, "random_seed": seed, "load_model": None, "model_name": "mv",
                "losses_to_use": losses, "video_dir": str(Path(data.root) / "videos"),
                "dali": {"base_train_sequence_length": 16}, "model_save_path": str(root / "ck" / "{model_name}_{epoch}.pth"),
                "logs_save_path": str(root / "logs")}
    config = root / "mv.py"
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    start = time.perf_counter()
    result = api.train(str(config), quiet=True)
    test = result["test_scores"]
    out = {f"test {v}": test[f"pixel_error/{v}"] for v in data.view_names}
    out["seconds"] = time.perf_counter() - start
    import csv

    split = {int(r["frame"]): r["split"] for r in csv.DictReader(open(Path(result["run_dir"]) / "split.csv"))}
    train = np.array([split[i] == "train" for i in range(len(data.keypoints))])
    testm = np.array([split[i] == "test" for i in range(len(data.keypoints))])
    mean_pose = np.nanmean(data.keypoints[train], axis=0)
    err = np.linalg.norm(data.keypoints[testm] - mean_pose, axis=-1)  # (N, V, K)
    out.update({f"mean pose {v}": float(np.nanmean(err[:, i])) for i, v in enumerate(data.view_names)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    for seed in args.seeds:
        for losses in ([], ["pca_multiview"]):
            with tempfile.TemporaryDirectory() as tmp:
                got = run(Path(tmp), seed, args.epochs, losses)
            print(f"seed {seed} losses {losses or 'none'}: " + ", ".join(f"{k} {v:.2f}" for k, v in got.items()),
                  flush=True)


if __name__ == "__main__":
    main()
