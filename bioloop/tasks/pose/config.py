"""Settings of the pose task (Lightning Pose names, flattened; DeepLabCut 3 sections where they nest).

Lightning Pose's nested ``config.yaml`` and DeepLabCut 3's ``pytorch_config.yaml`` sections map onto
these flat settings through the tables in ``bioloop/tasks/pose/spellings.py`` (``training.max_epochs``
-> ``epochs``, DeepLabCut's ``model`` -> ``pose_model``, ...); DeepLabCut's nested ``detector``
section is read by ``DetectorSettings.unwrap_settings``.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from bioloop.config import validators as v
from bioloop.config.schema import TrainingConfig, setting

UNSUPERVISED_LOSSES = ("temporal", "pca_singleview", "pca_multiview")
DETECTORS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn",
             "fasterrcnn_resnet50_fpn_v2", "ssdlite320_mobilenet_v3_large")


@attrs.frozen(kw_only=True)
class ImageDims:
    """An image size in pixels."""

    height: int = setting(256, "pixels", validator=v.at_least(16))
    width: int = setting(256, "pixels", validator=v.at_least(16))


@attrs.frozen(kw_only=True)
class TemporalLoss:
    """Penalise keypoint jumps between consecutive unlabeled frames (Lightning Pose ``losses.temporal``)."""

    log_weight: float = setting(5.0, "loss weight is 1 / (2 * exp(log_weight)), as in Lightning Pose", validator=v.finite)
    epsilon: float = setting(20.0, "jumps up to this many pixels are free", validator=v.at_least(0))
    prob_threshold: float = setting(0.05, "keypoints less confident than this are ignored", validator=v.between(0, 1))
    warmup_epochs: int = setting(0, "the weight rises linearly from 0 over this many epochs", validator=v.at_least(0))


@attrs.frozen(kw_only=True)
class PCALoss:
    """Penalise poses off a PCA subspace of the labeled poses (``pca_singleview`` / ``pca_multiview``)."""

    log_weight: float = setting(5.0, "loss weight is 1 / (2 * exp(log_weight)), as in Lightning Pose", validator=v.finite)
    components_to_keep: float = setting(
        0.99, "a fraction (< 1) of explained variance, or a number of components", validator=v.greater_than(0))
    epsilon: float | None = setting(None, "reconstruction error (pixels) that is free; None fits it on the labels",
                                    validator=v.at_least(0))
    warmup_epochs: int = setting(0, "the weight rises linearly from 0 over this many epochs", validator=v.at_least(0))


@attrs.frozen(kw_only=True)
class UnsupervisedLosses:
    """Hyperparameters of the unsupervised losses named in ``losses_to_use``."""

    temporal: TemporalLoss = setting(factory=TemporalLoss, doc="temporal smoothness loss")
    pca_singleview: PCALoss = setting(factory=PCALoss, doc="single-view pose PCA loss")
    pca_multiview: PCALoss = setting(factory=lambda: PCALoss(components_to_keep=3),
                                     doc="multi-view consistency PCA loss (3 components: a 3D point)")


@attrs.frozen(kw_only=True)
class VideoBatching:
    """Frames per batch when reading videos (Lightning Pose's ``dali`` settings; read by our own loader)."""

    base_train_sequence_length: int = setting(32, "unlabeled frames per batch, heatmap/regression models",
                                              validator=v.at_least(1))
    base_predict_sequence_length: int = setting(96, "frames per batch when predicting videos, base models",
                                                validator=v.at_least(1))
    context_train_batch_size: int = setting(16, "unlabeled frames per batch, heatmap_mhcrnn", validator=v.at_least(1))
    context_predict_sequence_length: int = setting(96, "frames per batch when predicting videos, heatmap_mhcrnn",
                                                   validator=v.at_least(1))


@attrs.frozen(kw_only=True)
class EvalSettings:
    """What happens after training, and how predictions are scored (Lightning Pose ``eval``)."""

    predict_vids_after_training: bool = setting(True, "predict every video in test_videos_directory after training")
    test_videos_directory: str | None = setting(None, "folder of videos to predict after training", path=True)
    save_vids_after_training: bool = setting(False, "also write mp4s with keypoint overlays")
    colormap: str = setting("cool", "matplotlib colormap of the overlay markers")
    confidence_thresh_for_vid: float = setting(0.9, "overlay only keypoints at least this confident",
                                               validator=v.between(0, 1))
    pck_thresholds: list[float] = setting(factory=lambda: [5.0, 10.0], doc="PCK distances in frame pixels",
                                          validator=v.each_positive)
    oks_sigmas: list[float] | float | None = setting(
        0.1, "per-keypoint OKS sigmas (or one for all; DeepLabCut's default is 0.1) for oks_map; None skips OKS")


@attrs.frozen(kw_only=True)
class DetectorSettings:
    """The animal detector of top-down models (DeepLabCut ``detector``), trained from keypoint boxes.

    DeepLabCut's nested spelling is accepted too (see ``unwrap_settings``): ``data.train.hflip``,
    ``model.type/variant/pretrained``, ``runner.optimizer/scheduler/eval_interval/snapshots`` and
    ``train_settings.batch_size/epochs`` map onto the flat settings below.
    """

    variant: str = setting("fasterrcnn_mobilenet_v3_large_fpn", f"torchvision detector: {', '.join(DETECTORS)}")
    pretrained: bool | str = setting(False, "False, or a local weights file (nothing is downloaded)")
    epochs: int = setting(50, "detector training epochs", validator=v.at_least(1))
    batch_size: int = setting(4, "images per detector batch", validator=v.at_least(1))
    learning_rate: float = setting(1e-4, "detector learning rate", validator=v.greater_than(0))
    optimizer: Any = setting(None, "optimizer spec for the detector; None uses AdamW")
    scheduler: Any = setting(None, "LR scheduler spec for the detector (stepped each epoch); None keeps the LR")
    load_scheduler_state_dict: bool = setting(True, "restore the detector's scheduler on resume; False keeps an "
                                                    "edited schedule")
    box_padding: float = setting(0.1, "grow keypoint boxes by this fraction of their size", validator=v.at_least(0))
    hflip: bool = setting(True, "horizontal flip augmentation while training the detector")
    score_threshold: float = setting(0.5, "detections below this score are dropped", validator=v.between(0, 1))
    max_animals: int | None = setting(None, "keep at most this many detections per frame", validator=v.at_least(1))
    crop_size: ImageDims = setting(factory=lambda: ImageDims(height=256, width=256),
                                   doc="pose model input: each detection is cropped and resized to this")
    validate_every: int = setting(1, "epochs between detector validations (box recall at IoU 0.5)",
                                  validator=v.at_least(1))
    save_every_n_epochs: int = setting(1, "write a detector snapshot every this many epochs (and the last)",
                                       validator=v.at_least(1))
    max_snapshots: int | None = setting(5, "keep this many newest detector snapshots (None keeps all)",
                                        validator=v.at_least(1))
    load_model: str | None = setting("latest", "resume the detector from 'latest', 'best', a file, or None")
    resume_training_from: str | None = setting(
        None, "a detector snapshot to continue training from (overrides load_model)", path=True)

    @staticmethod
    def unwrap_settings(values):
        """DeepLabCut's nested ``detector`` spelling -> the flat settings (the ``DETECTOR`` table in
        ``bioloop/tasks/pose/spellings.py``); keys without a row are reported, not dropped."""
        from bioloop.tasks.pose.spellings import unwrap_detector

        return unwrap_detector(values)

    def check(self) -> list[str]:
        if self.variant not in DETECTORS:
            from bioloop.config.structure import did_you_mean

            return [f"variant: unknown detector {self.variant!r}{did_you_mean(self.variant, DETECTORS)}; "
                    f"use one of {', '.join(DETECTORS)}"]
        return []


@attrs.frozen(kw_only=True)
class PoseConfig(TrainingConfig):
    """Keypoint estimation in images and videos (Lightning Pose and DeepLabCut 3 features)."""

    model_name: str = setting("pose", "names the run's checkpoint files (the model is model_type + backbone)")
    # data
    data_dir: str = setting(".", "folder holding the labels file and labeled images", path=True)
    labels_file: str | list[str] = setting(
        "CollectedData.csv", "DLC/LP CSV, DLC .h5 or SLEAP .slp, relative to data_dir; with view_names one per view")
    view_names: list[str] | None = setting(
        None, "multi-camera project: the views, in the order of labels_file (videos are <session>_<view>.mp4)",
        validator=v.unique)
    video_dir: str | None = setting(None, "folder of unlabeled videos (unsupervised losses)", path=True)
    keypoint_names: list[str] | None = setting(None, "keypoints in the labels file's order; checked against it",
                                               validator=v.unique)
    num_keypoints: int | None = setting(None, "number of keypoints; checked against the labels file",
                                        validator=v.at_least(1))
    image_resize_dims: ImageDims = setting(factory=ImageDims, doc="network input size; predictions map back exactly")
    downsample_factor: int = setting(2, "heatmaps are 2**downsample_factor times smaller than the input",
                                     validator=v.between(0, 4))
    flip_pairs: list[tuple[str, str]] | None = setting(
        None, "left/right keypoint pairs swapped by horizontal flips; None infers *_left/*_right style names")
    mirrored_column_matches: list[list[int]] | None = setting(
        None, "multi-view: per view, the keypoint columns of the same body parts (pca_multiview)")
    columns_for_singleview_pca: list[int] | None = setting(None, "keypoint indices used by pca_singleview")
    imgaug: Any = setting("dlc", "'default', 'dlc', 'dlc-lr', 'dlc-top-down', or an albumentations pipeline")
    train_prob: float = setting(0.95, "share of labeled frames (by video) for training", validator=v.between(0, 1))
    val_prob: float = setting(0.05, "share for validation; the rest is the test split", validator=v.between(0, 1))
    train_frames: float | int = setting(1, "training frames used: a fraction in (0, 1] or a count > 1",
                                        validator=v.greater_than(0))
    rng_seed_data_pt: int = setting(0, "seed of the train/val/test split", validator=v.at_least(0))
    rng_seed_model_pt: int = setting(0, "seed of the head initialisation", validator=v.at_least(0))
    # model
    model_type: Literal["heatmap", "regression", "heatmap_mhcrnn"] = setting("heatmap", "prediction head family")
    backbone: str = setting("resnet50", "timm model name or torchvision resnet18/34/50/101/152")
    pretrained: bool | str = setting(False, "False, or a local backbone weights file (nothing is downloaded)")
    unfreezing_epoch: int = setting(20, "the backbone stays frozen before this epoch", validator=v.at_least(0))
    backbone_lr_factor: float = setting(1.0, "backbone learning rate = learning_rate * this, once unfrozen",
                                        validator=v.greater_than(0))
    heatmap_loss_type: Literal["mse", "kl", "js"] = setting(
        "mse", "heatmap loss; mse (Lightning Pose's default) is slow to start without pretrained weights, kl/js "
        "learn much faster from scratch")
    heatmap_sigma: float = setting(1.25, "Gaussian target width in heatmap pixels", validator=v.greater_than(0))
    heatmap_target: Literal["gaussian", "plateau"] = setting("gaussian", "heatmap target shape")
    locref: bool = setting(False, "add DeepLabCut location-refinement offset maps")
    uniform_heatmaps_for_nan_keypoints: bool = setting(
        True, "missing keypoints train towards uniform heatmaps (True) or are dropped from the loss (False)")
    losses_to_use: list[str] = setting(factory=list, doc=f"unsupervised losses: {', '.join(UNSUPERVISED_LOSSES)}",
                                       validator=v.unique)
    losses: UnsupervisedLosses = setting(factory=UnsupervisedLosses, doc="unsupervised loss hyperparameters")
    dali: VideoBatching = setting(factory=VideoBatching, doc="video batch sizes (Lightning Pose dali settings)")
    eval: EvalSettings = setting(factory=EvalSettings, doc="after-training prediction and scoring")
    pose_model: dict[str, Any] | None = setting(
        None, "DeepLabCut-style model section {'backbone': {...}, 'heads': {...}}; overrides backbone/model_type")
    method: Literal["bu", "td"] = setting("bu", "'bu' one pose per image; 'td' detect animals, then pose per crop")
    detector: DetectorSettings | None = setting(None, "detector section, required for method='td'")

    @staticmethod
    def spelling_tables():
        """Lightning Pose's and DeepLabCut's spellings (``bioloop/tasks/pose/spellings.py``)."""
        from bioloop.tasks.pose import spellings

        return spellings.TABLES, spellings.AMBIGUOUS

    @staticmethod
    def documented_spellings():
        """Every table, for docs/configuration.md (the detector's is read inside the detector section)."""
        from bioloop.tasks.pose import spellings

        return (*spellings.TABLES, spellings.DETECTOR)

    def check(self) -> list[str]:
        problems = super().check()
        if self.keypoint_names is not None and self.num_keypoints is not None \
                and len(self.keypoint_names) != self.num_keypoints:
            problems.append(f"num_keypoints: {self.num_keypoints} but keypoint_names lists "
                            f"{len(self.keypoint_names)}; make them agree (or drop num_keypoints)")
        if self.train_prob + self.val_prob > 1 + 1e-9:
            problems.append(f"train_prob: train_prob + val_prob must be at most 1 (got {self.train_prob} + "
                            f"{self.val_prob})")
        if isinstance(self.train_frames, float) and self.train_frames > 1:
            problems.append(f"train_frames: a float is a fraction in (0, 1] (got {self.train_frames}); "
                            "write an int for a frame count")
        from bioloop.config.structure import did_you_mean

        for name in self.losses_to_use:
            if name not in UNSUPERVISED_LOSSES:
                problems.append(f"losses_to_use: unknown loss {name!r}{did_you_mean(name, UNSUPERVISED_LOSSES)}; "
                                f"use {', '.join(UNSUPERVISED_LOSSES)}")
        if self.losses_to_use and self.video_dir is None:
            problems.append("video_dir: unsupervised losses train on unlabeled video frames; set video_dir")
        if "pca_singleview" in self.losses_to_use and not self.columns_for_singleview_pca:
            problems.append("columns_for_singleview_pca: pca_singleview needs the keypoint indices to use")
        if self.view_names is not None:
            from bioloop.tasks.pose.multiview import check_views_config

            problems += check_views_config(self)
        elif not isinstance(self.labels_file, str):
            problems.append(f"labels_file: a list of labels files is a multi-view project (got {self.labels_file}); "
                            "set view_names too, or give one file")
        if "pca_multiview" in self.losses_to_use and not self.mirrored_column_matches and not self.view_names:
            problems.append("mirrored_column_matches: pca_multiview needs the keypoint columns of each view")
        if self.mirrored_column_matches and len({len(m) for m in self.mirrored_column_matches}) > 1:
            problems.append("mirrored_column_matches: every view must list the same number of columns "
                            f"(got {[len(m) for m in self.mirrored_column_matches]})")
        if self.method == "td" and self.detector is None:
            problems.append("detector: method='td' needs a detector section, e.g. detector = {'variant': "
                            "'fasterrcnn_mobilenet_v3_large_fpn'}")
        if isinstance(self.imgaug, str) and self.imgaug not in ("default", "dlc", "dlc-lr", "dlc-top-down"):
            problems.append(f"imgaug: unknown pipeline {self.imgaug!r}"
                            f"{did_you_mean(self.imgaug, ['default', 'dlc', 'dlc-lr', 'dlc-top-down'])}; "
                            "use default, dlc, dlc-lr, dlc-top-down or an albumentations pipeline")
        return problems
