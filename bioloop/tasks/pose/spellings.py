"""Lightning Pose's ``config.yaml`` and DeepLabCut 3's ``pytorch_config.yaml`` mapped onto bioloop's settings.

Lightning Pose nests ``data``, ``training``, ``model``, ``dali``, ``losses``, ``eval``, ``callbacks`` (and
Hydra's ``hydra``); its ``model`` section is flattened (``model.backbone`` -> ``backbone``).
DeepLabCut's ``runner``, ``train_settings``, ``metadata``, ``data`` (augmentation), ``net_type`` and
``resume_training_from`` map onto the engine's settings, and its ``model`` section (``backbone: {type:
...}``, ``heads``) is bioloop's ``pose_model``. A file is one or the other, told by its keys; a ``model``
dict that shows neither is an error rather than a guess.
"""

from __future__ import annotations

import sys

from bioloop.config.spellings import Row, Table, Unsupported

_DLC_METRICS = {"test.mAP": "oks_map", "test.mAR": "oks_map", "test.rmse": "rmse/mean",
                "test.rmse_pcutoff": "rmse/mean"}
_NO_EFFECT = "no effect on what is trained"
_LOSSES = ("temporal", "pca_singleview", "pca_multiview")


# ---------------------------------------------------------------- Lightning Pose
def _lp_scheduler(value, ctx):
    if value != "multisteplr":
        raise Unsupported("Lightning Pose's scheduler here is multisteplr")
    params = ctx.get("training.lr_scheduler_params.multisteplr") or {}
    unknown = sorted(set(params) - {"milestones", "gamma"})
    if unknown:
        raise Unsupported(f"multisteplr takes milestones and gamma (got also {unknown})")
    return {"scheduler": {"type": "MultiStepLR", "params": dict(params)}, "scheduler_interval": "epoch"}


def _lp_optimizer(value, ctx):
    if value not in ("Adam", "AdamW"):
        raise Unsupported("Lightning Pose offers Adam or AdamW")
    return {"optimizer": {"type": value}}


def _lp_early_stopping(value, ctx):
    if value is not True:
        return {}  # train for max_epochs and keep the best (Lightning Pose's default)
    # Lightning Pose's EarlyStopping watches the validation supervised loss, mode min
    return {"early_stopping": {"metric": "loss", "mode": "min",
                               "patience": ctx.get("training.early_stop_patience", 3),
                               "min_epochs": ctx.get("training.min_epochs", 0) or 0}}


def _read_by_early_stopping(value, ctx):
    if ctx.get("training.early_stopping") is not True:
        ctx.note("no effect: training.early_stopping is false, so every run trains max_epochs")
    return {}


def _log_every(value, ctx):
    steps = ctx.get("training.accumulate_grad_batches", 1) or 1
    return value * steps if isinstance(value, int) and isinstance(steps, int) else value


def _ckpt_every(value, ctx):
    if value is None:
        ctx.note("bioloop writes an epoch checkpoint every epoch (resuming needs one) besides the best; "
                 "set max_snapshots to keep fewer")
        return {}
    return {"save_every_n_epochs": value}


def _num_gpus(value, ctx):
    if value in (0, 1):
        return {}
    raise Unsupported("one process trains on one device; use `bioloop train CONFIG --devices N` for N GPUs")


def _gpu_id(value, ctx):
    return {"device": f"cuda:{value}"} if ctx.get("training.num_gpus", 1) == 1 and value not in (0, None) else {}


def _anneal(value, ctx):
    """Lightning Pose's AnnealWeight: weight(e) = min(init + (e - freeze) * f, final) after epoch ``freeze``.
    bioloop's warmup_epochs W gives min(e / W, 1): the same for init 0, final 1, freeze 0 and f = 1 / W."""
    value = dict(value or {})
    init, final = value.get("init_val", 0.0), value.get("final_val", 1.0)
    freeze, factor = value.get("freeze_until_epoch", 0), value.get("increase_factor", 0.01)
    if value.get("attr_name", "total_unsupervised_importance") != "total_unsupervised_importance":
        raise Unsupported("only the unsupervised losses' weight can be annealed")
    unknown = sorted(set(value) - {"attr_name", "init_val", "final_val", "freeze_until_epoch", "increase_factor"})
    if unknown:
        raise Unsupported(f"unknown keys {unknown}")
    if init != 0 or final != 1 or freeze != 0 or not factor or factor <= 0:
        raise Unsupported("bioloop anneals linearly from 0 to 1 from epoch 0 (init_val 0, final_val 1, "
                          "freeze_until_epoch 0); other schedules have no counterpart")
    epochs = 1.0 / factor
    if abs(epochs - round(epochs)) > 1e-6:
        raise Unsupported("increase_factor must be 1/N for a whole number of warm-up epochs N")
    return {f"losses.{name}.warmup_epochs": int(round(epochs)) for name in _LOSSES}


def _lp_model_type(value, ctx):
    if value == "heatmap_multiview_transformer":
        raise Unsupported("the cross-view transformer is not built here; model_type heatmap with data.view_names "
                          "trains one backbone + heatmap head shared by every view (add pca_multiview to "
                          "losses_to_use to tie the views together)")
    return value


def _dali_seed(value, ctx):
    return {}  # unlabeled clips are seeded from random_seed (each sample's own seed)


LIGHTNING_POSE = Table(
    tool="Lightning Pose",
    rows=(
        Row("data.image_orig_dims.height", meaning="original frame size; bioloop reads it from the images"),
        Row("data.image_orig_dims.width", meaning="original frame size; bioloop reads it from the images"),
        Row("data.image_resize_dims.height", "image_resize_dims.height", meaning="network input height"),
        Row("data.image_resize_dims.width", "image_resize_dims.width", meaning="network input width"),
        Row("data.data_dir", "data_dir", meaning="folder of the labels file and labeled images"),
        Row("data.video_dir", "video_dir", meaning="folder of unlabeled videos"),
        Row("data.csv_file", "labels_file", meaning="labels file, relative to data_dir (with view_names: one per view)"),
        Row("data.view_names", "view_names", meaning="multi-camera project: the views, in csv_file's order"),
        Row("data.downsample_factor", "downsample_factor", meaning="heatmaps 2**f smaller than the input"),
        Row("data.num_keypoints", "num_keypoints", meaning="number of keypoints"),
        Row("data.keypoint_names", "keypoint_names", meaning="keypoints in the labels file's order"),
        Row("data.mirrored_column_matches", "mirrored_column_matches", meaning="per view, matching columns"),
        Row("data.columns_for_singleview_pca", "columns_for_singleview_pca", meaning="keypoints of the PCA loss"),
        Row("training.imgaug", "imgaug", meaning="augmentation pipeline name"),
        Row("training.train_batch_size", "batch_size", meaning="labeled frames per training batch"),
        Row("training.val_batch_size", "validation_batch_size", meaning="labeled frames per validation batch"),
        Row("training.test_batch_size", meaning="frames per batch when scoring the test split, " + _NO_EFFECT),
        Row("training.train_prob", "train_prob", meaning="share of labeled frames for training"),
        Row("training.val_prob", "val_prob", meaning="share for validation; the rest is the test split"),
        Row("training.train_frames", "train_frames", meaning="training frames used: a fraction or a count"),
        Row("training.num_gpus", None, convert=_num_gpus, meaning="GPUs one run trains on"),
        Row("training.gpu_id", None, convert=_gpu_id, meaning="the GPU to train on"),
        Row("training.num_workers", "num_workers", meaning="DataLoader workers"),
        Row("training.early_stopping", None, convert=_lp_early_stopping,
            meaning="stop when the validation loss has not improved for early_stop_patience validations"),
        Row("training.early_stop_patience", None, convert=_read_by_early_stopping,
            meaning="validations without improvement before stopping (with early_stopping: true)"),
        Row("training.unfreezing_epoch", "unfreezing_epoch", meaning="the backbone trains from this epoch"),
        Row("training.min_epochs", None, convert=_read_by_early_stopping,
            meaning="early stopping may not stop before this epoch (with early_stopping: true)"),
        Row("training.max_epochs", "epochs", meaning="length of training in epochs"),
        Row("training.ckpt_every_n_epochs", None, convert=_ckpt_every, meaning="save weights every N epochs"),
        Row("training.log_every_n_steps", "logger.log_every_n_steps", convert=_log_every,
            meaning="log training scalars every N optimizer steps"),
        Row("training.check_val_every_n_epoch", "validate_every", meaning="validate every N epochs"),
        Row("training.check_val_every_n_epochs", "validate_every", meaning="(the spelling of LP's docs)"),
        Row("training.rng_seed_data_pt", "rng_seed_data_pt", meaning="seed of the data split"),
        Row("training.rng_seed_model_pt", "rng_seed_model_pt", meaning="seed of the head initialisation"),
        Row("training.lr_scheduler", None, convert=_lp_scheduler,
            meaning="multisteplr: multiply the LR by gamma at each milestone epoch"),
        Row("training.lr_scheduler_params.multisteplr", meaning="read with lr_scheduler"),
        Row("training.optimizer", None, convert=_lp_optimizer, meaning="Adam or AdamW"),
        Row("training.optimizer_params.learning_rate", "learning_rate", meaning="the initial learning rate"),
        Row("training.uniform_heatmaps_for_nan_keypoints", "uniform_heatmaps_for_nan_keypoints",
            meaning="missing keypoints train towards uniform heatmaps"),
        Row("training.accumulate_grad_batches", "gradient_accumulation_steps", meaning="batches per step"),
        Row("model.losses_to_use", "losses_to_use", meaning="the unsupervised losses"),
        Row("model.backbone", "backbone", meaning="backbone network name"),
        Row("model.backbone_pretrained", "pretrained", meaning="pretrained backbone weights"),
        Row("model.model_type", "model_type", convert=_lp_model_type,
            meaning="heatmap, regression or heatmap_mhcrnn (heatmap_multiview_transformer is refused)"),
        Row("model.heatmap_loss_type", "heatmap_loss_type", meaning="mse, kl or js"),
        Row("model.model_name", "model_name", meaning="names the model's files"),
        Row("model.checkpoint", "model_to_load", meaning="initialise the weights from this checkpoint"),
        Row("dali.general.seed", None, convert=_dali_seed, meaning="seed of DALI's video reader, " + _NO_EFFECT),
        Row("dali.base.train.sequence_length", "dali.base_train_sequence_length",
            meaning="unlabeled frames per batch, base models"),
        Row("dali.base.predict.sequence_length", "dali.base_predict_sequence_length",
            meaning="frames per batch when predicting videos, base models"),
        Row("dali.context.train.batch_size", "dali.context_train_batch_size",
            meaning="unlabeled frames per batch, heatmap_mhcrnn"),
        Row("dali.context.predict.sequence_length", "dali.context_predict_sequence_length",
            meaning="frames per batch when predicting videos, heatmap_mhcrnn"),
        Row("dali.*", "dali.*", meaning="bioloop's own spelling"),
        Row("losses.*", "losses.*", meaning="the unsupervised losses' hyperparameters, the same names"),
        Row("eval.hydra_paths", meaning="model folders for Lightning Pose's own scripts, " + _NO_EFFECT),
        Row("eval.fiftyone.*", meaning="the FiftyOne app's settings, " + _NO_EFFECT),
        Row("eval.video_file_to_plot", accept=(None,), meaning="a video for Lightning Pose's plotting script"),
        Row("eval.pred_csv_files_to_plot", meaning="CSVs for Lightning Pose's plotting script, " + _NO_EFFECT),
        Row("eval.saved_vid_preds_dir", accept=(None,),
            meaning="where video predictions go; bioloop writes them to <run folder>/video_preds"),
        Row("eval.*", "eval.*", meaning="after-training prediction, the same names"),
        Row("callbacks.anneal_weight", None, convert=_anneal,
            meaning="the unsupervised losses' weight rises linearly over 1/increase_factor epochs"),
        Row("hydra.*", meaning="Hydra's output folders; bioloop's are model_save_path/logs_save_path"),
    ),
    markers=("training", "callbacks", "hydra", "data.csv_file", "data.data_dir", "data.image_resize_dims",
             "model.losses_to_use", "model.model_type", "model.backbone:str", "model.heatmap_loss_type",
             "dali.base", "dali.context", "dali.general"),
    shared={"losses": ("__lp__",), "eval": ("hydra_paths", "fiftyone", "video_file_to_plot",
                                            "pred_csv_files_to_plot", "saved_vid_preds_dir"),
            "dali": ("base", "context", "general")},
)


# ---------------------------------------------------------------- DeepLabCut 3
def _key_metric(value, ctx):
    return _DLC_METRICS.get(value, value)


def _key_metric_asc(value, ctx):
    if not isinstance(value, bool):
        raise Unsupported("write true (larger is better) or false")
    return "max" if value else "min"


def _runner_type(value, ctx):
    if value not in ("PoseTrainingRunner", None):
        raise Unsupported("the pose runner is PoseTrainingRunner")
    return {}


def _gpus(value, ctx):
    if value is None or value == [] or (isinstance(value, list) and len(value) == 1):
        return {"device": f"cuda:{value[0]}"} if value else {}
    raise Unsupported("one process trains on one GPU here; train on several with `bioloop train CONFIG "
                      "--devices N` (DDP) and list one GPU or none")


def _bodyparts(value, ctx):
    return {"keypoint_names": list(value)} if value else {}


def _individuals(value, ctx):
    return {}  # animals are read from the labels file


def _unique_bodyparts(value, ctx):
    if value:
        raise Unsupported("unique (per-frame, not per-animal) bodyparts have no counterpart in bioloop")
    return {}


def _with_identity(value, ctx):
    if value:
        raise Unsupported("identity prediction heads have no counterpart in bioloop")
    return {}


def _dlc_logger(value, ctx):
    value = dict(value or {})
    kind = value.pop("type", None)
    if kind != "WandbLogger":
        raise Unsupported("DeepLabCut's logger here is WandbLogger (TensorBoard and metrics.csv are always written)")
    value.pop("image_log_interval", None)
    wandb = {}
    if "project_name" in value:
        wandb["project"] = value.pop("project_name")
    if "run_name" in value:
        wandb["name"] = value.pop("run_name")
    return {"logger.wandb": {**wandb, **value}}


def _colormode(value, ctx):
    if value != "RGB":
        raise Unsupported("bioloop reads frames as RGB")
    return {}


def _dlc_train_aug(value, ctx):
    from bioloop.tasks.pose.augment_dlc import dlc_augmentation

    value = dict(value or {})
    if value.pop("collate", None) is not None:
        ctx.note("bioloop resizes every frame to image_resize_dims instead of DeepLabCut's random-scale collate")
    try:
        return {"imgaug": dlc_augmentation(value)}
    except ValueError as exc:
        raise Unsupported(str(exc)) from None


DEEPLABCUT = Table(
    tool="DeepLabCut",
    rows=(
        Row("model", "pose_model", meaning="the pose model: backbone, optional neck, heads"),
        Row("net_type", meaning="the name of the net `model` configures (informational)"),
        Row("method", "method", meaning="bu (one pose per image) or td (detect, then pose)"),
        Row("device", "device", meaning="auto, cpu, cuda or mps"),
        Row("resume_training_from", "load_model", meaning="continue training from this snapshot"),
        Row("logger", None, convert=_dlc_logger, meaning="a WandbLogger: project_name, run_name, wandb.init kwargs"),
        Row("metadata.project_path", meaning="the DLC project folder (filled by DLC), " + _NO_EFFECT),
        Row("metadata.pose_config_path", meaning="this file's path (filled by DLC), " + _NO_EFFECT),
        Row("metadata.bodyparts", None, convert=_bodyparts, meaning="keypoint names in the labels' order"),
        Row("metadata.unique_bodyparts", None, convert=_unique_bodyparts, meaning="per-frame keypoints"),
        Row("metadata.individuals", None, convert=_individuals, meaning="animal names; read from the labels"),
        Row("metadata.with_identity", None, convert=_with_identity, meaning="an identity head"),
        Row("data.colormode", None, convert=_colormode, meaning="RGB or BGR frames"),
        Row("data.inference.normalize_images", accept=(True,), meaning="ImageNet normalisation (bioloop: always)"),
        Row("data.train", None, convert=_dlc_train_aug, meaning="training augmentation (affine, noise, blur, ...)"),
        Row("runner.type", None, convert=_runner_type, meaning="the training runner"),
        Row("runner.key_metric", "key_metric", convert=_key_metric, meaning="the metric of the best snapshot"),
        Row("runner.key_metric_asc", "key_metric_mode", convert=_key_metric_asc, meaning="larger is better"),
        Row("runner.eval_interval", "validate_every", meaning="epochs between evaluations"),
        Row("runner.optimizer", "optimizer", meaning="{type, params} of a torch optimizer"),
        Row("runner.scheduler", "scheduler", meaning="{type, params} of a scheduler, nesting allowed"),
        Row("runner.load_scheduler_state_dict", "load_scheduler_state_dict", meaning="restore the scheduler"),
        Row("runner.snapshots.max_snapshots", "max_snapshots",
            meaning="snapshots kept; the best does not count as one"),
        Row("runner.snapshots.save_epochs", "save_every_n_epochs", meaning="epochs between snapshots"),
        Row("runner.snapshots.save_optimizer_state", "save_optimizer_state",
            meaning="keep the optimizer state in snapshots"),
        Row("runner.gpus", None, convert=_gpus, meaning="GPUs to train on"),
        Row("train_settings.batch_size", "batch_size", meaning="images per batch"),
        Row("train_settings.epochs", "epochs", meaning="the maximum number of epochs"),
        Row("train_settings.seed", "random_seed", meaning="the random seed"),
        Row("train_settings.dataloader_workers", "num_workers", meaning="DataLoader workers"),
        Row("train_settings.dataloader_pin_memory",
            meaning="page-locked batches, " + _NO_EFFECT + " (bioloop pins when training on CUDA)"),
        Row("train_settings.display_iters", "logger.log_every_n_steps", meaning="iterations between log lines"),
    ),
    markers=("runner.type", "runner.snapshots", "runner.key_metric", "runner.eval_interval", "runner.optimizer",
             "runner.gpus", "train_settings", "net_type", "metadata", "resume_training_from", "model.backbone:dict",
             "model.heads", "data.colormode", "data.train", "data.inference"),
    shared={"logger": ("type",), "device": (), "method": ()},
)

# ---------------------------------------------------------------- DeepLabCut 3, the top-down detector
_DETECTOR_TYPES = {"FasterRCNN": None, "SSDLite": "ssdlite320_mobilenet_v3_large"}


def _detector_type(value, ctx):
    if value not in _DETECTOR_TYPES:
        raise Unsupported("DeepLabCut's detectors are FasterRCNN and SSDLite")
    variant, implied = ctx.get("model.variant"), _DETECTOR_TYPES[value]
    if implied and variant not in (None, implied) or \
            value == "FasterRCNN" and isinstance(variant, str) and not variant.startswith("fasterrcnn"):
        raise Unsupported(f"model.variant {variant!r} is not a {value}")
    return {"variant": implied} if implied and variant is None else {}


def _detector_optimizer_state(value, ctx):
    if value is False:
        ctx.note("the detector's snapshots always keep the optimizer state (its training resumes exactly)")
    return {}


DETECTOR = Table(
    tool="DeepLabCut detector",
    rows=(
        Row("data.colormode", None, convert=_colormode, meaning="RGB or BGR frames"),
        Row("data.train.hflip", "hflip", meaning="horizontal flips while training the detector"),
        Row("data.train.normalize_images", accept=(True,), meaning="ImageNet normalisation (bioloop: always)"),
        Row("data.inference.normalize_images", accept=(True,), meaning="ImageNet normalisation (bioloop: always)"),
        Row("model.type", None, convert=_detector_type, meaning="FasterRCNN or SSDLite, matching the variant"),
        Row("model.variant", "variant", meaning="the torchvision detector"),
        Row("model.pretrained", "pretrained", meaning="pretrained weights (a local file here)"),
        Row("runner.type", accept=("DetectorTrainingRunner",), meaning="the detector's runner"),
        Row("runner.optimizer", "optimizer", meaning="{type, params} of a torch optimizer"),
        Row("runner.scheduler", "scheduler", meaning="{type, params} of a scheduler"),
        Row("runner.eval_interval", "validate_every", meaning="epochs between evaluations"),
        Row("runner.load_scheduler_state_dict", "load_scheduler_state_dict", meaning="restore the scheduler"),
        Row("runner.snapshots.max_snapshots", "max_snapshots", meaning="snapshots kept"),
        Row("runner.snapshots.save_epochs", "save_every_n_epochs", meaning="epochs between snapshots"),
        Row("runner.snapshots.save_optimizer_state", None, convert=_detector_optimizer_state,
            meaning="keep the optimizer state in snapshots"),
        Row("train_settings.batch_size", "batch_size", meaning="images per batch"),
        Row("train_settings.epochs", "epochs", meaning="detector training epochs"),
        Row("train_settings.dataloader_workers", meaning="DataLoader workers (the pose model's num_workers)"),
        Row("train_settings.dataloader_pin_memory", meaning="page-locked batches, " + _NO_EFFECT),
        Row("train_settings.display_iters", meaning="iterations between log lines, " + _NO_EFFECT),
    ),
    markers=("data", "model", "runner", "train_settings"),
)


def unwrap_detector(values):
    """DeepLabCut's nested ``detector`` section -> DetectorSettings' flat keys; a key without a row stays under
    its dotted name, so the strict loader reports it (the section's own flat names win)."""
    from bioloop.config.spellings import _lookup, translate

    if not isinstance(values, dict) or not DETECTOR.evidence(values):
        return values
    flat_names = {k: k for k in values if k not in DETECTOR.sections}  # they win, like an override
    result = translate(values, [DETECTOR], where="detector", table=DETECTOR, origins=flat_names)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    flat = dict(result.values)
    flat.update({path: _lookup(values, path)[1] for path in result.rejected})
    return flat


TABLES = (LIGHTNING_POSE, DEEPLABCUT)
AMBIGUOUS = ("model",)
