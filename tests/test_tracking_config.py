"""The tracking schema takes the GTR/DREEM reference configuration as written and rejects typos."""

from pathlib import Path

import pytest

from bioloop.config.loader import build_config
from bioloop.errors import ConfigError


def structure_section(_schema, values, *, where):
    """Load a settings mapping the way a config file is loaded (spellings translated, then validated)."""
    try:
        return build_config(values, where=where, base=Path(".")), []
    except ConfigError as exc:
        return None, exc.problems


REFERENCE = {
    "task": "tracking",
    "model": {"ckpt_path": None, "d_model": 64, "nhead": 4, "num_encoder_layers": 1, "num_decoder_layers": 2,
              "dropout": 0.0, "activation": "glu", "return_intermediate_dec": True, "norm": True,
              "num_layers_attn_head": 2, "dropout_attn_head": 0.1, "return_embedding": False,
              "decoder_self_attn": False,
              "embedding_meta": {"pos": {"mode": "learned", "emb_num": 16, "over_boxes": True},
                                 "temp": {"mode": "fixed"}},
              "encoder_cfg": {"model_name": "resnet18", "backend": "torchvision", "in_chans": 3, "weights": None}},
    "loss": {"neg_unmatched": False, "epsilon": 1e-4, "asso_weight": 1.0},
    "optimizer": {"name": "Adam", "lr": 1e-4, "betas": [0.9, 0.999]},
    "scheduler": {"name": "ReduceLROnPlateau", "mode": "min", "factor": 0.5, "patience": 10},
    "tracker": {"window_size": 8, "use_vis_feats": True, "overlap_thresh": 0.01, "mult_thresh": True,
                "decay_time": 0.9, "iou": "mult", "max_center_dist": 50.0, "persistent_tracking": False,
                "max_gap": 10, "max_tracks": 20},
    "runner": {"metrics": {"train": [], "val": ["num_switches"], "test": ["num_switches", "mota"]},
               "persistent_tracking": {"train": False, "val": True, "test": True}},
    "dataset": {"train_dataset": {"slp_files": ["a.slp"], "video_files": ["a.mp4"], "padding": 5, "crop_size": 64,
                                  "anchors": ["head", "tail"], "chunk": True, "clip_length": 8, "mode": "train",
                                  "n_chunks": 0.5, "seed": 3,
                                  "augmentations": {"Rotate": {"limit": 45, "p": 0.3},
                                                    "NodeDropout": {"p": 0.3, "n": 1}}},
                "val_dataset": {"dir": {"path": "val", "labels_suffix": ".slp", "vid_suffix": ".mp4"},
                                "mode": "val", "chunk": True, "clip_length": 16}},
    "dataloader": {"train_dataloader": {"shuffle": True, "num_workers": 0, "batch_size": 1},
                   "val_dataloader": {"shuffle": False, "num_workers": 0}},
    "logging": {"logger_type": "TensorBoardLogger", "name": "exp", "save_dir": "./logs"},
    "early_stopping": {"monitor": "val_loss", "min_delta": 0.1, "patience": 10, "mode": "min", "check_finite": True,
                       "verbose": False},
    "checkpointing": {"monitor": ["val_loss", "val_num_switches"], "dirpath": "./models", "save_top_k": 1,
                      "save_last": True, "every_n_epochs": 1},
    "trainer": {"check_val_every_n_epoch": 1, "gradient_clip_val": 1.0, "limit_train_batches": 10,
                "limit_val_batches": 4, "max_epochs": 3, "min_epochs": 1, "log_every_n_steps": 5},
    "view_batch": {"enable": False, "num_frames": 5, "no_train": False},
}


def test_the_reference_configuration_structures_onto_our_settings():
    cfg, problems = structure_section(None, REFERENCE, where="gtr.py")
    assert problems == []
    assert cfg.gtr.d_model == 64 and cfg.gtr.activation == "glu" and cfg.gtr.return_intermediate_dec
    assert cfg.gtr.embedding_meta.pos.mode == "learned"
    assert cfg.gtr.embedding_meta.pos.kwargs == {"emb_num": 16, "over_boxes": True}
    assert cfg.gtr.encoder_cfg.backend == "torchvision" and cfg.gtr.encoder_cfg.kwargs == {"weights": None}
    assert cfg.optimizer == {"type": "Adam", "params": {"lr": 1e-4, "betas": [0.9, 0.999]}}
    assert cfg.scheduler["type"] == "ReduceLROnPlateau"
    assert (cfg.epochs, cfg.validate_every, cfg.max_grad_norm, cfg.iterations_per_epoch) == (3, 1, 1.0, 10)
    assert cfg.validation_batch_limit == 4 and cfg.logger.log_every_n_steps == 5
    assert cfg.early_stopping.metric == "loss" and cfg.early_stopping.min_epochs == 1
    assert (cfg.key_metric, cfg.monitor, cfg.max_snapshots) == ("loss", ["num_switches"], 1)
    assert cfg.logs_save_path == "./logs/exp" and cfg.logger.tensorboard  # TensorBoardLogger: save_dir/name
    assert cfg.tracker.decay_time == 0.9 and cfg.tracker.max_tracks == 20
    assert cfg.runner.persistent_tracking.val is True
    train = cfg.dataset.train_dataset
    assert train.anchors == ["head", "tail"] and train.n_chunks == 0.5
    assert cfg.dataset.val_dataset.dir.labels_suffix == ".slp"


def test_typos_in_any_section_are_reported_with_their_path():
    bad = {**REFERENCE, "tracker": {"window_sise": 8}, "trainer": {"max_epoch": 3},
           "dataset": {"train_dataset": {"clip_lenght": 8}}}
    _, problems = structure_section(None, bad, where="gtr.py")
    text = "\n".join(problems)
    assert "tracker.window_sise" in text and "did you mean 'window_size'" in text
    assert "trainer.max_epoch" in text and "dataset.train_dataset.clip_lenght" in text


def test_cross_checks():
    _, problems = structure_section(None, {"task": "tracking", "model": {"d_model": 30, "nhead": 4}},
                                    where="gtr.py")
    text = "\n".join(problems)
    assert "model.nhead: d_model (30) must be divisible by nhead (4)" in text  # the key as written
    cfg, problems = structure_section(None, {"task": "tracking"}, where="gtr.py")
    assert problems == []  # enough for `bioloop evaluate`; training and prediction ask for a dataset
    from bioloop.tasks.tracking.task import TrackingTask, inference_settings

    with pytest.raises(ConfigError, match="dataset: needs a train_dataset"):
        TrackingTask().build_datasets(cfg)
    with pytest.raises(ConfigError, match="dataset: prediction needs the crop settings"):
        inference_settings(cfg)
    bad = {"task": "tracking", "dataset": {"train_dataset": {"slp_files": ["a", "b"], "video_files": ["a"],
                                                             "n_chunks": 2.5}}}
    text = "\n".join(structure_section(None, bad, where="gtr.py")[1])
    assert "1 videos for 2 slp_files" in text and "n_chunks: a float is a fraction" in text


def test_command_line_overrides_win_over_the_reference_sections(tmp_path):
    from bioloop import api

    path = tmp_path / "gtr.py"
    path.write_text("task = 'tracking'\nmodel = {'d_model': 64, 'nhead': 4}\ntrainer = {'max_epochs': 50}\n"
                    "dataset = {'train_dataset': {'slp_files': ['a.slp'], 'n_chunks': 2}}\n")
    cfg = api.load_config(path, ["epochs=1", "gtr.d_model=16"])
    assert (cfg.epochs, cfg.gtr.d_model, cfg.gtr.nhead) == (1, 16, 4)
    assert cfg.dataset.train_dataset.n_chunks == 2 and isinstance(cfg.dataset.train_dataset.n_chunks, int)
