"""Semi-supervised pose training: soft-argmax keypoints, unlabeled clips and the weighted losses."""

import csv

import numpy as np
import pytest
import torch

from bioloop import api
from bioloop.tasks.pose.heatmaps import soft_argmax


def test_soft_argmax_of_a_single_peak_is_its_pixel_centre():
    maps = torch.zeros(1, 2, 8, 10)
    maps[0, 0, 3, 5] = 1.0  # stride 4: x = 5 * 4 + 1.5, y = 3 * 4 + 1.5
    maps[0, 1, 0, 0] = 1.0
    xy = soft_argmax(maps, 4)
    assert torch.allclose(xy[0, 0], torch.tensor([21.5, 13.5]), atol=1e-3)
    assert torch.allclose(xy[0, 1], torch.tensor([1.5, 1.5]), atol=1e-3)


def test_soft_argmax_of_logits_averages_and_passes_gradients():
    logits = torch.full((1, 1, 4, 6), -1e4)
    logits[0, 0, 1, 2] = 0.0
    logits[0, 0, 1, 4] = 0.0  # two equal peaks: the expectation is halfway
    logits.requires_grad_(True)
    xy = soft_argmax(logits, 1, logits=True)
    assert torch.allclose(xy[0, 0], torch.tensor([3.0, 1.0]), atol=1e-4)
    xy[0, 0, 0].backward()
    assert logits.grad[0, 0, 1, 4] > 0 > logits.grad[0, 0, 1, 2]


def test_objective_weights_and_warmup():
    from bioloop.tasks.pose.semi import UnsupervisedObjective
    from bioloop.tasks.pose.unsupervised import TemporalLoss

    objective = UnsupervisedObjective({"temporal": TemporalLoss(epsilon=1.0, log_weight=0.0)}, {"temporal": 2})
    kp = torch.zeros(1, 3, 1, 2)
    kp[0, 1, 0, 0] = 4.0  # jumps of 4 px then 4 px back: relu(4 - 1) = 3 each, mean 3
    conf = torch.ones(1, 3, 1)
    assert float(objective(kp, conf, epoch=0)["temporal"]) == 0.0  # warm-up starts at 0
    assert float(objective(kp, conf, epoch=1)["temporal"]) == pytest.approx(3 * 0.5 * 0.5)
    assert float(objective(kp, conf, epoch=5)["temporal"]) == pytest.approx(3 * 0.5)  # 1 / (2 e^0)


def _config(tmp_path, data, extra=""):
    path = tmp_path / "semi.py"
    path.write_text(f"""
task = "pose"
data_dir = {str(data.root)!r}
video_dir = {str(data.root + '/videos')!r}
image_resize_dims = {{"height": 64, "width": 80}}
backbone = "test_resnet"
imgaug = "default"
train_prob = 0.5
val_prob = 0.5
unfreezing_epoch = 0
batch_size = 2
epochs = 1
iterations_per_epoch = 2
validation_batch_limit = 1
losses_to_use = ["temporal", "pca_singleview"]
columns_for_singleview_pca = [0, 1, 2, 5, 6]
losses = {{"temporal": {{"log_weight": 0.0, "epsilon": 0.0}}, "pca_singleview": {{"log_weight": 0.0}}}}
dali = {{"base_train_sequence_length": 6}}
load_model = None
model_name = "semi"
logger = {{"log_every_n_steps": 1}}
model_save_path = {str(tmp_path / 'ck' / '{model_name}_{epoch}.pth')!r}
logs_save_path = {str(tmp_path / 'logs')!r}
{extra}""")
    return path


def test_unlabeled_clips_are_seeded_and_sized_from_the_dali_settings(tmp_path):
    from bioloop.data.synthetic_pose import make_pose_dataset
    from bioloop.tasks import get_task

    data = make_pose_dataset(tmp_path / "data", n_frames=8, n_videos=2)
    cfg = api.load_config(str(_config(tmp_path, data)))
    train, _ = get_task("pose").build_datasets(cfg)
    a, b, c = train[(0, 11)], train[(0, 11)], train[(0, 12)]
    assert a["unlabeled"].shape == (3, 3, 64, 80)  # ceil(6 / batch_size 2) frames per sample
    assert torch.equal(a["unlabeled"], b["unlabeled"])
    assert not torch.equal(a["unlabeled"], c["unlabeled"])
    assert a["unlabeled"].mean() < 0.5 and a["unlabeled"].min() < 0  # ImageNet-normalised like the labeled image


def test_semisupervised_training_logs_each_loss(tmp_path):
    from bioloop.data.synthetic_pose import make_pose_dataset

    data = make_pose_dataset(tmp_path / "data", n_frames=8, n_videos=2)
    api.train(str(_config(tmp_path, data)), quiet=True)
    with open(tmp_path / "logs" / "metrics.csv") as f:
        tags = {row["tag"]: float(row["value"]) for row in csv.DictReader(f)}
    for name in ("train/supervised_loss", "train/temporal_loss", "train/pca_singleview_loss"):
        assert name in tags and np.isfinite(tags[name])
    assert tags["train/temporal_loss"] > 0


def test_missing_video_dir_is_named(tmp_path):
    from bioloop.data.synthetic_pose import make_pose_dataset
    from bioloop.errors import DataError
    from bioloop.tasks import get_task

    data = make_pose_dataset(tmp_path / "data", n_frames=4, n_videos=2, video=False)
    cfg = api.load_config(str(_config(tmp_path, data, f"video_dir = {str(tmp_path / 'nothing')!r}")))
    with pytest.raises(DataError, match=r"semi.py: video_dir.*not a folder"):
        get_task("pose").build_datasets(cfg)
