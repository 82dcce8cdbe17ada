"""Settings of the tracking task: the global tracking transformer (GTR/DREEM) configuration.

Every key of the reference's YAML exists. Sections keep their names (``loss``, ``tracker``,
``runner``, ``dataset``, ``view_batch``); GTR's ``model`` section is called ``gtr`` here (a
``model = {...}`` dict is read as it, since ``model`` is also the engine's "ready module"
setting). The Lightning-specific sections (``trainer``, ``dataloader``, ``logging``,
``early_stopping``, ``checkpointing``) and GTR's ``optimizer``/``scheduler`` spelling map onto the
engine's shared settings through the table in ``bioloop/tasks/tracking/spellings.py``, with
Lightning's meanings and defaults; a key with no row is reported with its dotted path.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from bioloop.config import validators as v
from bioloop.config.schema import TrainingConfig, setting

EMBEDDING_MODES = ("fixed", "learned", "none", "None", None)
SOURCE_FORMATS = ("auto", "slp", "ctc", "mot", "trackmate")


@attrs.frozen(kw_only=True)
class EmbeddingSettings:
    """One embedding (``embedding_meta.pos`` / ``embedding_meta.temp``): its mode and keyword arguments."""

    mode: str | None = setting("fixed", "'fixed' (sinusoidal), 'learned', or 'none'/None for no embedding")
    kwargs: dict[str, Any] = setting(factory=dict, doc="further keyword arguments of the embedding")

    @staticmethod
    def unwrap_settings(values):
        """GTR writes the keyword arguments beside ``mode``: ``{"mode": "learned", "emb_num": 16}``."""
        if isinstance(values, dict) and "kwargs" not in values:
            rest = {k: val for k, val in values.items() if k != "mode"}
            return {"mode": values.get("mode", "fixed"), "kwargs": rest} if rest or "mode" in values else values
        return values

    def check(self) -> list[str]:
        if self.mode not in EMBEDDING_MODES:
            return [f"mode: unknown embedding mode {self.mode!r}; use 'fixed', 'learned' or 'none'"]
        return []


@attrs.frozen(kw_only=True)
class EmbeddingMeta:
    """Spatial (``pos``) and temporal (``temp``) embeddings added to the instance features."""

    pos: EmbeddingSettings | None = setting(factory=EmbeddingSettings, doc="spatial embedding of each instance's box")
    temp: EmbeddingSettings | None = setting(factory=EmbeddingSettings, doc="temporal embedding of its frame")


@attrs.frozen(kw_only=True)
class EncoderSettings:
    """The visual encoder of instance crops (``encoder_cfg``)."""

    model_name: str = setting("resnet18", "timm model name (any of timm.list_models) or a torchvision resnet")
    backend: Literal["timm", "torchvision"] = setting("timm", "library that builds model_name")
    in_chans: int = setting(3, "input channels of the crops (anchors stacked as channels multiply them)",
                            validator=v.at_least(1))
    pretrained: bool | str = setting(False, "False, or a local weights file (nothing is downloaded)")
    kwargs: dict[str, Any] = setting(factory=dict, doc="further keyword arguments for timm.create_model / resnet")

    @staticmethod
    def unwrap_settings(values):
        """GTR passes extra keyword arguments beside the named ones."""
        if isinstance(values, dict) and "kwargs" not in values:
            known = {"model_name", "backend", "in_chans", "pretrained"}
            rest = {k: val for k, val in values.items() if k not in known}
            if rest:
                return {**{k: val for k, val in values.items() if k in known}, "kwargs": rest}
        return values


@attrs.frozen(kw_only=True)
class GTRSettings:
    """The global tracking transformer (the reference's ``model`` section)."""

    ckpt_path: str | None = setting(None, "a checkpoint to resume training from (same as load_model)", path=True)
    d_model: int = setting(1024, "embedding size of the transformer", validator=v.at_least(1))
    nhead: int = setting(8, "attention heads per transformer layer", validator=v.at_least(1))
    num_encoder_layers: int = setting(6, "transformer encoder layers", validator=v.at_least(0))
    num_decoder_layers: int = setting(6, "transformer decoder layers", validator=v.at_least(1))
    dropout: float = setting(0.1, "dropout in each transformer layer", validator=v.between(0, 1))
    activation: Literal["relu", "gelu", "glu"] = setting("relu", "feed-forward activation of the transformer")
    return_intermediate_dec: bool = setting(False, "return every decoder layer's output (deep supervision)")
    norm: bool = setting(False, "layer-normalise the encoder and decoder outputs")
    num_layers_attn_head: int = setting(2, "layers of the association attention head", validator=v.at_least(1))
    dropout_attn_head: float = setting(0.1, "dropout in the attention head", validator=v.between(0, 1))
    return_embedding: bool = setting(False, "also return the positional/temporal embeddings")
    decoder_self_attn: bool = setting(False, "use self-attention in the decoder layers")
    embedding_meta: EmbeddingMeta = setting(factory=EmbeddingMeta, doc="spatial and temporal embeddings")
    encoder_cfg: EncoderSettings = setting(factory=EncoderSettings, doc="visual encoder of the crops")

    def check(self) -> list[str]:
        if self.d_model % self.nhead:
            return [f"nhead: d_model ({self.d_model}) must be divisible by nhead ({self.nhead})"]
        return []


@attrs.frozen(kw_only=True)
class LossSettings:
    """The association loss."""

    neg_unmatched: bool = setting(False, "unmatched instances target a background column")
    epsilon: float = setting(1e-4, "numerical floor inside the log", validator=v.greater_than(0))
    asso_weight: float = setting(1.0, "weight of the association loss", validator=v.at_least(0))


@attrs.frozen(kw_only=True)
class TrackerSettings:
    """How predictions are linked into tracks at inference (the reference's ``tracker`` section)."""

    window_size: int = setting(8, "frames in the sliding window (references + the query frame)",
                               validator=v.at_least(2))
    use_vis_feats: bool = setting(True, "use the visual features; False associates by position and time only")
    overlap_thresh: float = setting(0.01, "trajectory score an assignment needs; below it a new track starts",
                                    validator=v.at_least(0))
    mult_thresh: bool = setting(True, "scale overlap_thresh by the track's number of references in the window")
    decay_time: float | None = setting(None, "weight older frames by decay_time ** age (0 < decay_time <= 1)",
                                       validator=v.between(0, 1))
    iou: Literal["mult", "max", ""] | None = setting(None, "reweight trajectory scores by box IoU: 'mult' or 'max'")
    max_center_dist: float | None = setting(None, "tracks farther than this (pixels) cannot be assigned",
                                            validator=v.greater_than(0))
    persistent_tracking: bool = setting(False, "keep tracks across chunks of one video")
    max_gap: int | None = setting(None, "frames a track may be missing before it ends; None = never",
                                  validator=v.at_least(0))
    max_tracks: int | None = setting(None, "at most this many tracks; then an instance joins its best-scoring "
                                     "existing track (None = no limit; instances no track may take are counted)",
                                     validator=v.at_least(1))


@attrs.frozen(kw_only=True)
class PerSplit:
    """One value per split: ``train``, ``val``, ``test``."""

    train: Any = setting(None, "training")
    val: Any = setting(None, "validation")
    test: Any = setting(None, "test / prediction")


def _default_metrics() -> PerSplit:
    return PerSplit(train=[], val=["num_switches"], test=["num_switches", "mota", "idf1"])


@attrs.frozen(kw_only=True)
class RunnerSettings:
    """What is computed in each split (the reference's ``runner`` section)."""

    metrics: PerSplit = setting(factory=_default_metrics, doc="motmetrics names computed per split "
                                "(any of motmetrics' list_metrics)")
    persistent_tracking: PerSplit = setting(
        factory=lambda: PerSplit(train=False, val=False, test=True), doc="track across chunks, per split")


@attrs.frozen(kw_only=True)
class DirSettings:
    """Find labels and videos in a folder instead of listing them (the reference's ``dir``)."""

    path: str = setting(doc="folder holding labels and videos", path=True)
    labels_suffix: str = setting(".slp", "labels file ending, e.g. .slp, .csv, .txt")
    vid_suffix: str = setting(".mp4", "video file ending, e.g. .mp4, .avi, .tif")


@attrs.frozen(kw_only=True)
class DatasetSettings:
    """One dataset (train, val or test): where the tracks are and how instances become crops."""

    slp_files: list[str] = setting(factory=list, doc="SLEAP label files (SleapDataset)")
    video_files: list[str] = setting(factory=list, doc="videos of slp_files, in the same order: "
                                     "a file, a folder holding the .slp's videos, or OLD=NEW remapping its stored paths")
    videos: list[str] = setting(factory=list, doc="microscopy: raw frame folders (CTC) or image folders (MOT)")
    tracks: list[str] = setting(factory=list, doc="microscopy: CTC TRA folders, MOT txt or TrackMate CSV files")
    source_format: Literal["auto", "slp", "ctc", "mot", "trackmate"] = setting(
        "auto", "label format; auto decides from the file endings")
    dir: DirSettings | None = setting(None, "a folder to search instead of file lists")
    padding: int = setting(5, "pixels added to each side of an instance's box", validator=v.at_least(0))
    crop_size: int | tuple[int, int] = setting(128, "crop size in pixels (int or (height, width))")
    anchors: str | list[str] = setting("centroid", "crop centre: a node name, 'centroid', or a list of nodes "
                                       "(one crop each, stacked as channels)")
    chunk: bool = setting(True, "split videos into clips of clip_length frames")
    clip_length: int = setting(16, "frames per clip", validator=v.at_least(2))
    mode: Literal["train", "val", "test"] = setting("train", "what this dataset is used for")
    n_chunks: float | int = setting(1.0, "clips used: a fraction in (0, 1] or a count", validator=v.greater_than(0))
    seed: int | None = setting(None, "seed of the clip subsampling (None uses random_seed)")
    gt_list: str | None = setting(None, "CTC: man_track.txt path when it is not beside the masks", path=True)
    augmentations: Any = setting(None, "{'Rotate': {'limit': 45, 'p': 0.3}, 'NodeDropout': {...}, ...} or an "
                                       "albumentations pipeline")
    max_objects: int | None = setting(None, "skip frames with more instances than this", validator=v.at_least(1))

    def check(self) -> list[str]:
        problems = []
        if isinstance(self.n_chunks, float) and self.n_chunks > 1:
            problems.append(f"n_chunks: a float is a fraction in (0, 1] (got {self.n_chunks}); write an int count")
        if self.video_files and len(self.video_files) != len(self.slp_files):
            problems.append(f"video_files: {len(self.video_files)} videos for {len(self.slp_files)} slp_files")
        if self.videos and self.tracks and len(self.videos) != len(self.tracks):
            problems.append(f"videos: {len(self.videos)} frame folders for {len(self.tracks)} tracks")
        return problems


@attrs.frozen(kw_only=True)
class DatasetSection:
    """The datasets of each split (``train_dataset`` required; ``val_dataset``/``test_dataset`` optional)."""

    train_dataset: DatasetSettings | None = setting(None, "training data")
    val_dataset: DatasetSettings | None = setting(None, "validation data")
    test_dataset: DatasetSettings | None = setting(None, "data `bioloop predict`/`evaluate` use by default")


@attrs.frozen(kw_only=True)
class ViewBatch:
    """Render a batch of crops with their ids before training (``bioloop view-batch``)."""

    enable: bool = setting(False, "render a batch to <run folder>/view_batch.png and TensorBoard before training")
    num_frames: int = setting(4, "frames of the batch to show", validator=v.at_least(1))
    no_train: bool = setting(False, "stop after rendering instead of training")


@attrs.frozen(kw_only=True)
class TrackingConfig(TrainingConfig):
    """Multi-object tracking with a global tracking transformer (GTR/DREEM)."""

    model_name: str = setting("gtr", "names the run's checkpoint files (the model is the gtr section)")
    gtr: GTRSettings = setting(factory=GTRSettings, doc="the transformer (the reference's `model` section)")
    loss: LossSettings = setting(factory=LossSettings, doc="association loss")
    tracker: TrackerSettings = setting(factory=TrackerSettings, doc="linking at inference")
    runner: RunnerSettings = setting(factory=RunnerSettings, doc="metrics and persistent tracking per split")
    dataset: DatasetSection = setting(factory=DatasetSection, doc="train/val/test datasets")
    view_batch: ViewBatch = setting(factory=ViewBatch, doc="render a batch of crops before training")

    @staticmethod
    def spelling_tables():
        """Other tools' spellings this task reads (``bioloop/tasks/tracking/spellings.py``)."""
        from bioloop.tasks.tracking import spellings

        return spellings.TABLES, ()

    # ``dataset.train_dataset`` is required where it is used (train, view-batch, predict's crop
    # settings), not here: `bioloop evaluate` scores two files with a config that has no dataset.
    TRAIN_DATASET_FIX = "dataset = {'train_dataset': {'slp_files': [...], 'video_files': [...]}}"
