"""Other tools' spellings: every row of every table maps a key to what it means in that tool.

Meanings are those of the tools' documentation (Lightning 2's Trainer, EarlyStopping and
ModelCheckpoint; Lightning Pose's config.yaml; DeepLabCut 3's pytorch_config.yaml), in
/work/shared/reference and the tools' docs.
"""

from __future__ import annotations

import pytest

from bioloop.config.spellings import ANY, set_dotted, translate
from bioloop.tasks.pose.spellings import DEEPLABCUT, DETECTOR, LIGHTNING_POSE
from bioloop.tasks.tracking.spellings import GTR

ERROR = "error"


def _run(table, key, value, extra=None):
    source: dict = {}
    set_dotted(source, key, value)
    for k, v in (extra or {}).items():
        set_dotted(source, k, v)
    return translate(source, [table], where="their.yaml", whole_file=True, table=table)


def _flat(values, prefix=""):
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in ("gtr", "pose_model"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# (table, source key, value, other keys of the file, expected bioloop settings | ERROR)
CASES = [
    # --- DREEM/GTR on Lightning
    (GTR, "model", {"d_model": 64, "ckpt_path": "a.ckpt"}, None, {"gtr": {"d_model": 64, "ckpt_path": "a.ckpt"},
                                                                  "load_model": "a.ckpt"}),
    (GTR, "optimizer.name", "Adam", None, {"optimizer.type": "Adam"}),
    (GTR, "optimizer.type", "AdamW", None, {"optimizer.type": "AdamW"}),
    (GTR, "optimizer.lr", 1e-3, None, {"optimizer.params.lr": 1e-3}),
    (GTR, "optimizer.params.lr", 1e-3, None, {"optimizer.params.lr": 1e-3}),
    (GTR, "scheduler.name", "StepLR", None, {"scheduler.type": "StepLR"}),
    (GTR, "scheduler.type", "StepLR", None, {"scheduler.type": "StepLR"}),
    (GTR, "scheduler.step_size", 5, None, {"scheduler.params.step_size": 5}),
    (GTR, "scheduler.params.gamma", 0.5, None, {"scheduler.params.gamma": 0.5}),
    (GTR, "trainer.max_epochs", 7, None, {"epochs": 7}),
    (GTR, "trainer.max_epochs", -1, None, ERROR),  # Lightning: endless
    # min_epochs only delays early stopping; without it Lightning trains max_epochs anyway
    (GTR, "trainer.min_epochs", 3, None, {}),
    (GTR, "trainer.min_epochs", 3, {"early_stopping.monitor": "val_loss"}, {"early_stopping.min_epochs": 3}),
    (GTR, "trainer.check_val_every_n_epoch", 2, None, {"validate_every": 2}),
    (GTR, "trainer.check_val_every_n_epoch", None, None, ERROR),
    (GTR, "trainer.gradient_clip_val", 0.5, None, {"max_grad_norm": 0.5}),
    (GTR, "trainer.gradient_clip_val", 0, None, {"max_grad_norm": None}),  # 0: no clipping
    (GTR, "trainer.gradient_clip_val", 0.5, {"trainer.gradient_clip_algorithm": "value"}, ERROR),
    (GTR, "trainer.accumulate_grad_batches", 4, None, {"gradient_accumulation_steps": 4}),
    (GTR, "trainer.limit_train_batches", 10, None, {"iterations_per_epoch": 10}),
    (GTR, "trainer.limit_train_batches", 1.0, None, {"iterations_per_epoch": None}),  # the whole set
    (GTR, "trainer.limit_train_batches", 0.25, None, ERROR),
    (GTR, "trainer.limit_val_batches", 3, None, {"validation_batch_limit": 3}),
    (GTR, "trainer.limit_val_batches", 1.0, None, {"validation_batch_limit": None}),
    (GTR, "trainer.precision", "16-mixed", None, {"precision": "16"}),
    (GTR, "trainer.precision", "bf16-mixed", None, {"precision": "bf16"}),
    (GTR, "trainer.precision", 32, None, {"precision": "32"}),
    (GTR, "trainer.precision", "16-true", None, ERROR),  # casts the weights: not autocast
    (GTR, "trainer.deterministic", True, None, {"deterministic": True}),
    (GTR, "trainer.log_every_n_steps", 5, None, {"logger.log_every_n_steps": 5}),
    # Lightning counts optimizer steps, bioloop batches
    (GTR, "trainer.log_every_n_steps", 5, {"trainer.accumulate_grad_batches": 4},
     {"logger.log_every_n_steps": 20, "gradient_accumulation_steps": 4}),
    (GTR, "trainer.accelerator", "cpu", None, {"device": "cpu"}),
    (GTR, "trainer.accelerator", "gpu", {"trainer.devices": [1]}, {"device": "cuda:1"}),
    (GTR, "trainer.accelerator", "auto", None, {}),
    (GTR, "trainer.accelerator", "tpu", None, ERROR),
    (GTR, "trainer.devices", 1, None, {}),
    (GTR, "trainer.devices", 4, None, ERROR),  # bioloop train --devices 4
    (GTR, "trainer.strategy", "ddp", None, {}),
    (GTR, "trainer.strategy", "fsdp", None, ERROR),
    (GTR, "trainer.default_root_dir", "runs", None, {"base_experiment_path": "runs"}),
    (GTR, "dataloader.train_dataloader.batch_size", 2, None, {"batch_size": 2}),
    (GTR, "dataloader.train_dataloader.num_workers", 3, None, {"num_workers": 3}),
    (GTR, "dataloader.train_dataloader.shuffle", True, None, {}),
    (GTR, "dataloader.train_dataloader.shuffle", False, None, ERROR),
    (GTR, "dataloader.val_dataloader.batch_size", 4, None, {"validation_batch_size": 4}),
    (GTR, "dataloader.val_dataloader.shuffle", False, None, {}),
    (GTR, "dataloader.val_dataloader.shuffle", True, None, ERROR),
    (GTR, "dataloader.val_dataloader.num_workers", 0, None, {}),
    (GTR, "logging.logger_type", "TensorBoardLogger", None, {"logger.tensorboard": True}),
    (GTR, "logging.logger_type", "CSVLogger", None, {"logger.tensorboard": False}),  # metrics.csv anyway
    (GTR, "logging.logger_type", "WandbLogger", {"logging.project": "p", "logging.name": "run"},
     {"logger.wandb": {"project": "p", "name": "run"}}),
    (GTR, "logging.logger_type", "MLFlowLogger", None, ERROR),
    # Lightning's TensorBoardLogger/CSVLogger write to save_dir/name/version_N
    (GTR, "logging.save_dir", "logs", {"logging.name": "exp"},
     {"logs_save_path": "logs/exp", "logger.tensorboard": True}),
    (GTR, "logging.save_dir", "logs", None, {"logs_save_path": "logs", "logger.tensorboard": True}),
    (GTR, "logging.name", "exp", None, {"logs_save_path": "lightning_logs/exp", "logger.tensorboard": True}),
    (GTR, "logging.project", "p", None, ERROR),  # only a WandbLogger takes it
    *((GTR, f"logging.{k}", "x", {"logging.logger_type": "WandbLogger"}, {"logger.wandb": {k: "x"}})
      for k in ("project", "entity", "group", "job_type", "notes", "tags", "id", "mode", "dir")),
    # EarlyStopping's own defaults (patience 3, mode min, min_delta 0), not bioloop's (patience 10)
    (GTR, "early_stopping.monitor", "val_num_switches", None,
     {"early_stopping.metric": "num_switches", "early_stopping.patience": 3, "early_stopping.mode": "min",
      "early_stopping.min_delta": 0.0}),
    (GTR, "early_stopping.patience", 7, {"early_stopping.monitor": "val_loss"}, {"early_stopping.patience": 7}),
    (GTR, "early_stopping.min_delta", 0.1, {"early_stopping.monitor": "val_loss"},
     {"early_stopping.min_delta": 0.1}),
    (GTR, "early_stopping.mode", "max", {"early_stopping.monitor": "val_mota"}, {"early_stopping.mode": "max"}),
    (GTR, "early_stopping.metric", "mota", {"early_stopping.monitor": "val_loss"}, ERROR),  # two say which
    (GTR, "early_stopping.min_epochs", 2, {"early_stopping.verbose": True}, {"early_stopping.min_epochs": 2}),
    # ModelCheckpoint: best by the first monitored metric, mode min unless given
    (GTR, "checkpointing.monitor", ["val_loss", "val_num_switches"], None,
     {"key_metric": "loss", "key_metric_mode": "min", "monitor": ["num_switches"], "max_snapshots": 1}),
    (GTR, "checkpointing.monitor", "val_mota", {"checkpointing.mode": "max"},
     {"key_metric": "mota", "key_metric_mode": "max"}),
    (GTR, "checkpointing.dirpath", "models", None, {"model_save_path": "models/{model_name}_{epoch}.pth",
                                                             "max_snapshots": 1}),
    (GTR, "checkpointing.dirpath", None, None, {"max_snapshots": 1}),
    (GTR, "checkpointing.every_n_epochs", 2, None, {"save_every_n_epochs": 2, "max_snapshots": 1}),
    (GTR, "checkpointing.save_top_k", 1, None, {"max_snapshots": 1}),
    (GTR, "checkpointing.save_top_k", -1, None, {"max_snapshots": None}),  # all kept
    (GTR, "checkpointing.save_top_k", 3, None, ERROR),  # the 3 best: no counterpart (not the 3 newest)
    (GTR, "checkpointing.save_last", True, None, {"max_snapshots": 1}),
    (GTR, "checkpointing.save_weights_only", True, None, {"save_optimizer_state": False, "max_snapshots": 1}),
    # --- Lightning Pose
    (LIGHTNING_POSE, "data.image_resize_dims.height", 128, None, {"image_resize_dims.height": 128}),
    (LIGHTNING_POSE, "data.image_resize_dims.width", 64, None, {"image_resize_dims.width": 64}),
    (LIGHTNING_POSE, "data.data_dir", "/d", None, {"data_dir": "/d"}),
    (LIGHTNING_POSE, "data.video_dir", "/v", None, {"video_dir": "/v"}),
    (LIGHTNING_POSE, "data.csv_file", "labels.csv", None, {"labels_file": "labels.csv"}),
    (LIGHTNING_POSE, "data.csv_file", ["top.csv", "side.csv"], None, {"labels_file": ["top.csv", "side.csv"]}),
    (LIGHTNING_POSE, "data.view_names", ["top", "side"], None, {"view_names": ["top", "side"]}),
    (LIGHTNING_POSE, "data.downsample_factor", 3, None, {"downsample_factor": 3}),
    (LIGHTNING_POSE, "data.num_keypoints", 17, None, {"num_keypoints": 17}),
    (LIGHTNING_POSE, "data.keypoint_names", ["a", "b"], None, {"keypoint_names": ["a", "b"]}),
    (LIGHTNING_POSE, "data.mirrored_column_matches", [[0], [1]], None, {"mirrored_column_matches": [[0], [1]]}),
    (LIGHTNING_POSE, "data.columns_for_singleview_pca", [0, 1], None, {"columns_for_singleview_pca": [0, 1]}),
    (LIGHTNING_POSE, "training.imgaug", "dlc-lr", None, {"imgaug": "dlc-lr"}),
    (LIGHTNING_POSE, "training.train_batch_size", 16, None, {"batch_size": 16}),
    (LIGHTNING_POSE, "training.val_batch_size", 32, None, {"validation_batch_size": 32}),
    (LIGHTNING_POSE, "training.train_prob", 0.8, None, {"train_prob": 0.8}),
    (LIGHTNING_POSE, "training.val_prob", 0.1, None, {"val_prob": 0.1}),
    (LIGHTNING_POSE, "training.train_frames", 50, None, {"train_frames": 50}),
    (LIGHTNING_POSE, "training.num_gpus", 1, None, {}),
    (LIGHTNING_POSE, "training.num_gpus", 2, None, ERROR),
    (LIGHTNING_POSE, "training.gpu_id", 1, None, {"device": "cuda:1"}),
    (LIGHTNING_POSE, "training.gpu_id", 0, None, {}),
    (LIGHTNING_POSE, "training.num_workers", 4, None, {"num_workers": 4}),
    # early_stopping: true watches the validation loss with early_stop_patience, never before min_epochs
    (LIGHTNING_POSE, "training.early_stopping", True,
     {"training.early_stop_patience": 4, "training.min_epochs": 30},
     {"early_stopping": {"metric": "loss", "mode": "min", "patience": 4, "min_epochs": 30}}),
    (LIGHTNING_POSE, "training.early_stopping", True, None,
     {"early_stopping": {"metric": "loss", "mode": "min", "patience": 3, "min_epochs": 0}}),
    (LIGHTNING_POSE, "training.early_stopping", False, None, {}),
    (LIGHTNING_POSE, "training.early_stop_patience", 3, None, {}),  # only with early_stopping: true
    (LIGHTNING_POSE, "training.min_epochs", 300, None, {}),  # does not turn early stopping on
    (LIGHTNING_POSE, "training.unfreezing_epoch", 20, None, {"unfreezing_epoch": 20}),
    (LIGHTNING_POSE, "training.max_epochs", 300, None, {"epochs": 300}),
    (LIGHTNING_POSE, "training.ckpt_every_n_epochs", 10, None, {"save_every_n_epochs": 10}),
    (LIGHTNING_POSE, "training.ckpt_every_n_epochs", None, None, {}),
    (LIGHTNING_POSE, "training.log_every_n_steps", 10, {"training.accumulate_grad_batches": 2},
     {"logger.log_every_n_steps": 20, "gradient_accumulation_steps": 2}),
    (LIGHTNING_POSE, "training.check_val_every_n_epoch", 5, None, {"validate_every": 5}),
    (LIGHTNING_POSE, "training.check_val_every_n_epochs", 5, None, {"validate_every": 5}),
    (LIGHTNING_POSE, "training.rng_seed_data_pt", 1, None, {"rng_seed_data_pt": 1}),
    (LIGHTNING_POSE, "training.rng_seed_model_pt", 2, None, {"rng_seed_model_pt": 2}),
    (LIGHTNING_POSE, "training.lr_scheduler", "multisteplr",
     {"training.lr_scheduler_params.multisteplr": {"milestones": [150, 200], "gamma": 0.5}},
     {"scheduler": {"type": "MultiStepLR", "params": {"milestones": [150, 200], "gamma": 0.5}},
      "scheduler_interval": "epoch"}),
    (LIGHTNING_POSE, "training.lr_scheduler", "reducelronplateau", None, ERROR),
    (LIGHTNING_POSE, "training.optimizer", "AdamW", None, {"optimizer": {"type": "AdamW"}}),
    (LIGHTNING_POSE, "training.optimizer", "SGD", None, ERROR),
    (LIGHTNING_POSE, "training.optimizer_params.learning_rate", 1e-3, None, {"learning_rate": 1e-3}),
    (LIGHTNING_POSE, "training.uniform_heatmaps_for_nan_keypoints", False, None,
     {"uniform_heatmaps_for_nan_keypoints": False}),
    (LIGHTNING_POSE, "training.accumulate_grad_batches", 2, None, {"gradient_accumulation_steps": 2}),
    (LIGHTNING_POSE, "model.losses_to_use", ["temporal"], None, {"losses_to_use": ["temporal"]}),
    (LIGHTNING_POSE, "model.backbone", "resnet18", None, {"backbone": "resnet18"}),
    (LIGHTNING_POSE, "model.backbone_pretrained", False, None, {"pretrained": False}),
    (LIGHTNING_POSE, "model.model_type", "heatmap_mhcrnn", None, {"model_type": "heatmap_mhcrnn"}),
    (LIGHTNING_POSE, "model.model_type", "heatmap_multiview_transformer", None, ERROR),  # not built: refused
    (LIGHTNING_POSE, "model.heatmap_loss_type", "kl", None, {"heatmap_loss_type": "kl"}),
    (LIGHTNING_POSE, "model.model_name", "mouse", None, {"model_name": "mouse"}),
    (LIGHTNING_POSE, "model.checkpoint", "/m.ckpt", None, {"model_to_load": "/m.ckpt"}),  # weights at epoch 0
    (LIGHTNING_POSE, "dali.general.seed", 123456, None, {}),
    (LIGHTNING_POSE, "dali.base.train.sequence_length", 16, None, {"dali.base_train_sequence_length": 16}),
    (LIGHTNING_POSE, "dali.base.predict.sequence_length", 64, None, {"dali.base_predict_sequence_length": 64}),
    (LIGHTNING_POSE, "dali.context.train.batch_size", 8, None, {"dali.context_train_batch_size": 8}),
    (LIGHTNING_POSE, "dali.context.predict.sequence_length", 48, None,
     {"dali.context_predict_sequence_length": 48}),
    (LIGHTNING_POSE, "dali.base_train_sequence_length", 16, None, {"dali.base_train_sequence_length": 16}),
    (LIGHTNING_POSE, "losses.temporal.epsilon", 10.0, None, {"losses.temporal.epsilon": 10.0}),
    (LIGHTNING_POSE, "eval.confidence_thresh_for_vid", 0.5, None, {"eval.confidence_thresh_for_vid": 0.5}),
    (LIGHTNING_POSE, "eval.video_file_to_plot", "/a.mp4", None, ERROR),
    (LIGHTNING_POSE, "eval.saved_vid_preds_dir", "/preds", None, ERROR),
    # AnnealWeight from 0 by 1/N per epoch == bioloop's linear warm-up over N epochs, for every loss
    (LIGHTNING_POSE, "callbacks.anneal_weight", {"attr_name": "total_unsupervised_importance", "init_val": 0.0,
                                                 "increase_factor": 0.01, "final_val": 1.0,
                                                 "freeze_until_epoch": 0}, None,
     {"losses.temporal.warmup_epochs": 100, "losses.pca_singleview.warmup_epochs": 100,
      "losses.pca_multiview.warmup_epochs": 100}),
    (LIGHTNING_POSE, "callbacks.anneal_weight", {"increase_factor": 0.01, "freeze_until_epoch": 5}, None, ERROR),
    (LIGHTNING_POSE, "callbacks.anneal_weight", {"increase_factor": 0.03}, None, ERROR),  # 33.3 epochs
    # --- DeepLabCut 3
    (DEEPLABCUT, "model", {"backbone": {"type": "ResNet"}}, None, {"pose_model": {"backbone": {"type": "ResNet"}}}),
    (DEEPLABCUT, "method", "td", None, {"method": "td"}),
    (DEEPLABCUT, "device", "auto", None, {"device": "auto"}),
    (DEEPLABCUT, "resume_training_from", "snapshot-010.pt", None, {"load_model": "snapshot-010.pt"}),
    (DEEPLABCUT, "logger", {"type": "WandbLogger", "project_name": "p", "run_name": "r", "tags": ["a"]}, None,
     {"logger.wandb": {"project": "p", "name": "r", "tags": ["a"]}}),
    (DEEPLABCUT, "logger", {"type": "CSVLogger"}, None, ERROR),
    (DEEPLABCUT, "metadata.bodyparts", ["snout", "tail"], None, {"keypoint_names": ["snout", "tail"]}),
    (DEEPLABCUT, "metadata.unique_bodyparts", [], None, {}),
    (DEEPLABCUT, "metadata.unique_bodyparts", ["led"], None, ERROR),
    (DEEPLABCUT, "metadata.individuals", ["mouse1", "mouse2"], None, {}),
    (DEEPLABCUT, "metadata.with_identity", None, None, {}),
    (DEEPLABCUT, "metadata.with_identity", True, None, ERROR),
    (DEEPLABCUT, "data.colormode", "RGB", None, {}),
    (DEEPLABCUT, "data.colormode", "BGR", None, ERROR),
    (DEEPLABCUT, "data.train", {"elastic_transform": True}, None, ERROR),
    (DEEPLABCUT, "runner.type", "PoseTrainingRunner", None, {}),
    (DEEPLABCUT, "runner.type", "DetectorTrainingRunner", None, ERROR),
    (DEEPLABCUT, "runner.key_metric", "test.rmse", None, {"key_metric": "rmse/mean"}),
    (DEEPLABCUT, "runner.key_metric", "test.mAP", None, {"key_metric": "oks_map"}),
    (DEEPLABCUT, "runner.key_metric_asc", True, None, {"key_metric_mode": "max"}),
    (DEEPLABCUT, "runner.key_metric_asc", False, None, {"key_metric_mode": "min"}),
    (DEEPLABCUT, "runner.eval_interval", 5, None, {"validate_every": 5}),
    (DEEPLABCUT, "runner.optimizer", {"type": "SGD", "params": {"lr": 0.1}}, None,
     {"optimizer": {"type": "SGD", "params": {"lr": 0.1}}}),
    (DEEPLABCUT, "runner.scheduler", {"type": "StepLR", "params": {"step_size": 2}}, None,
     {"scheduler": {"type": "StepLR", "params": {"step_size": 2}}}),
    (DEEPLABCUT, "runner.load_scheduler_state_dict", False, None, {"load_scheduler_state_dict": False}),
    (DEEPLABCUT, "runner.snapshots.max_snapshots", 5, None, {"max_snapshots": 5}),  # the best not counted
    (DEEPLABCUT, "runner.snapshots.save_epochs", 25, None, {"save_every_n_epochs": 25}),
    (DEEPLABCUT, "runner.snapshots.save_optimizer_state", False, None, {"save_optimizer_state": False}),
    (DEEPLABCUT, "runner.gpus", [1], None, {"device": "cuda:1"}),
    (DEEPLABCUT, "runner.gpus", None, None, {}),
    (DEEPLABCUT, "runner.gpus", [0, 1], None, ERROR),
    (DEEPLABCUT, "train_settings.batch_size", 8, None, {"batch_size": 8}),
    (DEEPLABCUT, "train_settings.epochs", 200, None, {"epochs": 200}),
    (DEEPLABCUT, "train_settings.seed", 42, None, {"random_seed": 42}),
    (DEEPLABCUT, "train_settings.dataloader_workers", 2, None, {"num_workers": 2}),
    (DEEPLABCUT, "train_settings.display_iters", 500, None, {"logger.log_every_n_steps": 500}),
    # --- DeepLabCut 3's detector section (top-down)
    (DETECTOR, "data.colormode", "RGB", None, {}),
    (DETECTOR, "data.train.hflip", False, None, {"hflip": False}),
    (DETECTOR, "model.type", "SSDLite", None, {"variant": "ssdlite320_mobilenet_v3_large"}),
    (DETECTOR, "model.type", "FasterRCNN", {"model.variant": "fasterrcnn_resnet50_fpn"},
     {"variant": "fasterrcnn_resnet50_fpn"}),
    (DETECTOR, "model.type", "SSDLite", {"model.variant": "fasterrcnn_resnet50_fpn"}, ERROR),
    (DETECTOR, "model.type", "YOLO", None, ERROR),
    (DETECTOR, "model.variant", "fasterrcnn_resnet50_fpn", None, {"variant": "fasterrcnn_resnet50_fpn"}),
    (DETECTOR, "model.pretrained", False, None, {"pretrained": False}),
    (DETECTOR, "runner.optimizer", {"type": "AdamW"}, None, {"optimizer": {"type": "AdamW"}}),
    (DETECTOR, "runner.scheduler", {"type": "StepLR"}, None, {"scheduler": {"type": "StepLR"}}),
    (DETECTOR, "runner.eval_interval", 10, None, {"validate_every": 10}),
    (DETECTOR, "runner.load_scheduler_state_dict", False, None, {"load_scheduler_state_dict": False}),
    (DETECTOR, "runner.snapshots.max_snapshots", 3, None, {"max_snapshots": 3}),
    (DETECTOR, "runner.snapshots.save_epochs", 25, None, {"save_every_n_epochs": 25}),
    (DETECTOR, "runner.snapshots.save_optimizer_state", False, None, {}),  # with a printed note
    (DETECTOR, "train_settings.batch_size", 2, None, {"batch_size": 2}),
    (DETECTOR, "train_settings.epochs", 100, None, {"epochs": 100}),
]


@pytest.mark.parametrize("table, key, value, extra, expected", CASES,
                         ids=[f"{c[0].tool}:{c[1]}={c[2]!r}"[:70] for c in CASES])
def test_each_key_means_what_it_means_in_its_tool(table, key, value, extra, expected):
    result = _run(table, key, value, extra)
    if expected == ERROR:
        assert result.problems, result
        assert key.split(".")[0] in result.problems[0] and "(got" in result.problems[0]
        return
    assert result.problems == (), result.problems
    got = _flat(result.values)
    if extra is None:
        assert got == _flat(expected)
    else:  # the other keys write their own settings too
        assert {k: got.get(k, "<missing>") for k in _flat(expected)} == _flat(expected)


def test_every_row_is_exercised():
    """A row without a case above (or an accept-only row below) is a mapping nobody checked."""
    for table in (GTR, LIGHTNING_POSE, DEEPLABCUT, DETECTOR):
        covered = {table.row_for(key)[0] for t, key, *_ in CASES if t is table}
        covered |= {row for row in table.rows if row.target is None and row.convert is None}
        missing = [row.source for row in table.rows if row not in covered]
        assert not missing, f"{table.tool} rows without a meaning test: {missing}"


@pytest.mark.parametrize("table", [GTR, LIGHTNING_POSE, DEEPLABCUT, DETECTOR], ids=lambda t: t.tool)
def test_keys_without_effect_accept_only_the_values_that_make_them_so(table):
    for row in table.rows:
        if row.target is not None or row.convert is not None:
            continue
        key = row.source.replace("*", "anything")
        values = ["whatever"] if row.accept is ANY else list(row.accept)
        for value in values:
            result = _run(table, key, value)
            own = {k for k in _flat(result.values) if "'s default" not in result.names.get(k, "")}
            assert result.problems == () and not own, (key, result)  # only the section's defaults
        if row.accept is not ANY:
            result = _run(table, key, "__not-the-default__")
            assert result.problems and key in result.problems[0], key


def test_a_key_with_no_row_is_reported_with_its_dotted_path():
    result = _run(GTR, "trainer.max_epoch", 3)
    assert result.problems == ("their.yaml: trainer.max_epoch: DREEM/GTR's setting has no counterpart in bioloop "
                               "(got 3); remove it, or see docs/configuration.md for bioloop's settings",)
    assert _run(LIGHTNING_POSE, "training.train_batch_sise", 3).problems
    assert _run(DEEPLABCUT, "runner.snapshots.save_epoch", 3).problems
