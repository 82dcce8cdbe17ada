"""The pose schema (groundwork): Lightning Pose / DeepLabCut settings validate with file-and-key errors."""

import pytest

from pathlib import Path

from bioloop.config.loader import build_config
from bioloop.errors import ConfigError
from bioloop.tasks.pose.config import PoseConfig


def structure_section(_schema, values, *, where):
    """Load a settings mapping the way a config file is loaded (spellings translated, then validated)."""
    try:
        return build_config({"task": "pose", **values}, where=where, base=Path(".")), []
    except ConfigError as exc:
        return None, exc.problems


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


def test_deeplabcut_runner_and_train_settings_map_onto_engine_settings():
    values = {
        "task": "pose",
        "model": {"backbone": {"type": "ResNet", "model_name": "resnet18"}, "heads": {}},
        "runner": {"type": "PoseTrainingRunner", "key_metric": "test.rmse", "key_metric_asc": False,
                   "eval_interval": 5, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
                   "snapshots": {"max_snapshots": 3, "save_epochs": 25, "save_optimizer_state": True}},
        "train_settings": {"batch_size": 4, "epochs": 200, "seed": 7, "dataloader_workers": 2,
                           "dataloader_pin_memory": True, "display_iters": 50},
        "resume_training_from": "snapshot-020.pt",
    }
    cfg, problems = structure_section(PoseConfig, values, where="dlc.py")
    assert problems == []
    assert (cfg.key_metric, cfg.key_metric_mode, cfg.validate_every) == ("rmse/mean", "min", 5)
    assert (cfg.max_snapshots, cfg.save_every_n_epochs, cfg.load_model) == (3, 25, "snapshot-020.pt")
    assert (cfg.batch_size, cfg.epochs, cfg.random_seed, cfg.num_workers) == (4, 200, 7, 2)
    assert cfg.logger.log_every_n_steps == 50
    assert cfg.optimizer == {"type": "AdamW", "params": {"lr": 1e-4}}
    assert cfg.model is None and cfg.pose_model["backbone"]["type"] == "ResNet"
    cfg, _ = structure_section(PoseConfig, {"runner": {"key_metric": "test.mAP", "key_metric_asc": True}}, where="x")
    assert (cfg.key_metric, cfg.key_metric_mode) == ("oks_map", "max")


def test_deeplabcut_keys_we_do_not_map_are_reported_not_dropped():
    _, problems = structure_section(PoseConfig, {"runner": {"gpus": [0, 1], "snapshots": {"save_epoch": 5}},
                                                 "train_settings": {"batch_sise": 2}}, where="dlc.py")
    text = "\n".join(problems)
    assert "runner.gpus" in text and "runner.snapshots.save_epoch" in text and "train_settings.batch_sise" in text


def test_an_int_train_frames_stays_a_count():
    cfg, problems = _problems({"train_frames": 50})
    assert problems == [] and cfg.train_frames == 50 and isinstance(cfg.train_frames, int)
    cfg, _ = _problems({"train_frames": 0.5})
    assert cfg.train_frames == 0.5
