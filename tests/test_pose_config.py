"""The pose schema (groundwork): Lightning Pose / DeepLabCut settings validate with file-and-key errors."""

import pytest

from bioloop.config.structure import structure_section
from bioloop.tasks.pose.config import PoseConfig


def _problems(values):
    obj, problems = structure_section(PoseConfig, {"task": "pose", **values}, where="pose.py")
    return obj, problems


def test_defaults_follow_lightning_pose():
    cfg, problems = _problems({})
    assert problems == []
    assert (cfg.image_resize_dims.height, cfg.downsample_factor, cfg.train_prob, cfg.val_prob) == (256, 2, 0.95, 0.05)
    assert cfg.losses.temporal.epsilon == 20.0 and cfg.dali.base_predict_sequence_length == 96
    assert cfg.eval.predict_vids_after_training and cfg.eval.confidence_thresh_for_vid == 0.9


def test_sections_accept_dicts_and_dotted_values():
    cfg, problems = _problems({"image_resize_dims": {"height": 128, "width": 192},
                               "losses": {"temporal": {"epsilon": 10.0}}, "losses_to_use": ["temporal"],
                               "video_dir": "videos", "method": "td", "detector": {"variant": "ssdlite320_mobilenet_v3_large"}})
    assert problems == [] and cfg.image_resize_dims.width == 192 and cfg.losses.temporal.epsilon == 10.0


@pytest.mark.parametrize("values,expected", [
    ({"keypoint_names": ["a", "b"], "num_keypoints": 3}, "num_keypoints: 3 but keypoint_names lists 2"),
    ({"train_prob": 0.9, "val_prob": 0.2}, "train_prob: train_prob + val_prob must be at most 1"),
    ({"losses_to_use": ["temporall"], "video_dir": "v"}, "did you mean 'temporal'"),
    ({"losses_to_use": ["temporal"]}, "video_dir: unsupervised losses"),
    ({"losses_to_use": ["pca_singleview"], "video_dir": "v"}, "columns_for_singleview_pca: pca_singleview needs"),
    ({"method": "td"}, "detector: method='td' needs a detector section"),
    ({"detector": {"variant": "fasterrcnn"}}, "detector.variant: unknown detector"),
    ({"imgaug": "dlc_lr"}, "imgaug: unknown pipeline 'dlc_lr' (did you mean 'dlc-lr'?)"),
    ({"losses": {"temporal": {"epsilonn": 3}}}, "unknown setting 'losses.temporal.epsilonn'"),
    ({"train_frames": 1.5}, "train_frames: a float is a fraction"),
    ({"heatmap_loss_type": "l2"}, "heatmap_loss_type"),
])
def test_problems_name_the_file_and_key(values, expected):
    _, problems = _problems(values)
    assert any(p.startswith("pose.py: ") and expected in p for p in problems), problems
