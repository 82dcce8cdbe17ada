"""Settings of the segmentation task (names follow the CellMap toolkit, csc)."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from bioloop.config import validators as v
from bioloop.config.schema import TrainingConfig, setting
from bioloop.tasks.segmentation.process import ProcessConfig
from bioloop.tasks.segmentation.targets import InstanceTargets



@attrs.frozen(kw_only=True)
class ArrayInfo:
    """Patch geometry: voxels per axis (z, y, x) and the voxel size in nm it is read at."""

    shape: tuple[int, ...] = setting(doc="patch shape in voxels, (z, y, x); z = 1 makes 2D patches",
                                     validator=v.each_positive)
    scale: tuple[float, ...] = setting(doc="voxel size in nm, (z, y, x)", validator=v.each_positive)

    @staticmethod
    def unwrap_settings(values):
        """Accept the dict-of-arrays form ``{"raw": {"shape": ..., "scale": ...}}`` (one entry)."""
        if isinstance(values, dict) and len(values) == 1:
            (key, inner), = values.items()
            if key not in ("shape", "scale") and isinstance(inner, dict):
                return inner
        return values

    @property
    def extent(self) -> tuple[float, ...]:
        """World size of a patch in nm per axis."""
        return tuple(n * s for n, s in zip(self.shape, self.scale))

    def check(self) -> list[str]:
        problems = []
        if len(self.shape) != 3:
            problems.append(f"shape: expected 3 entries (z, y, x) (got {self.shape!r})")
        if len(self.scale) != 3:
            problems.append(f"scale: expected 3 entries (z, y, x) (got {self.scale!r})")
        return problems


def _default_transforms() -> dict[str, Any]:
    return {"mirror": {"axes": {"x": 0.5, "y": 0.5}}, "transpose": {"axes": ["x", "y"]}}


@attrs.frozen(kw_only=True)
class DatasplitSettings:
    """Where to find crops when generating the datasplit CSV (CellMap make_datasplit_csv)."""

    search_path: str = setting(doc="template, e.g. 'data/{dataset}/{dataset}.zarr/recon-1/{name}', or a folder "
                                   "of Allen tifs with layout='allen'", path=True)
    raw_name: str = setting("em/fibsem-uint8", "raw image inside a dataset ({name} of search_path)")
    crop_name: str = setting("labels/groundtruth/{crop}/{label}", "label arrays inside a dataset")
    layout: Literal["cellmap", "allen"] = setting("cellmap", "'cellmap' zarr crops or 'allen' tif triplets")
    datasets: list[str] = setting(factory=lambda: ["*"], doc="dataset names or glob patterns to include")
    crops: list[str] = setting(factory=lambda: ["*"], doc="crop names or glob patterns to include")
    force_all_classes: bool | Literal["train", "validate"] = setting(
        False, "True: only crops annotating every class; 'train'/'validate': only that usage needs all classes")
    filter_by_scale: float | tuple[float, ...] | None = setting(
        None, "keep only crops with a level at this voxel size (nm) or finer")


@attrs.frozen(kw_only=True)
class SegmentationConfig(TrainingConfig):
    """Semantic segmentation of 2D/3D volumes stored as OME-NGFF zarr."""

    classes: list[str] = setting(factory=lambda: ["nuc", "er"], doc="classes to predict, one output channel each",
                                 validator=v.all_of(v.non_empty, v.unique))
    datasplit_path: str = setting("datasplit.csv", "csc-style CSV listing train/validate crops", path=True)
    input_array_info: ArrayInfo = setting(
        factory=lambda: ArrayInfo(shape=(1, 128, 128), scale=(8.0, 8.0, 8.0)),
        doc="{'shape': (z, y, x) voxels, 'scale': (z, y, x) nm} of the input patches",
    )
    target_array_info: ArrayInfo | None = setting(
        None, "geometry of the target patches, centred on the input patch; smaller for valid-convolution models "
              "(Allen size_out), another scale resamples the labels; None uses input_array_info")
    validation_prob: float = setting(0.3, "share of datasets for validation when the datasplit is generated",
                                     validator=v.all_of(v.at_least(0.0), v.below(1.0)))
    datasplit: DatasplitSettings | None = setting(
        None, "how to generate datasplit_path when it does not exist (crawl a search path); None requires the file")
    label_layout: Literal["per_class", "class_ids", "instances", "binary"] = setting(
        "per_class", "labels: 'per_class' = one binary array per class inside the crop group (CellMap); "
                     "'class_ids' = one label image whose values are class ids (see class_ids); "
                     "'instances' = one instance label image, every id > 0 is the (single) class; "
                     "'binary' = one mask (0/1 or 0/255, e.g. Allen _GT files), > 0 is the (single) class")
    class_ids: dict[str, int] | None = setting(
        None, "label value of each class for label_layout='class_ids'; None means classes[i] -> i + 1")
    instance_targets: InstanceTargets | None = setting(
        None, "train on targets derived from instance labels (label_layout='instances'), so touching objects "
              "separate: {'kind': 'boundaries' | 'affinities' | 'distance', 'offsets': [...], ...}; "
              "`bioloop process` turns the predicted channels into instances; None trains the class mask")
    weighted_sampler: bool = setting(False, "draw training crops class-balanced (rare classes as often as common ones)")
    foreground_sampling: float = setting(
        0.0, "probability that a training patch is centred on a voxel of one of the classes (the class picked "
             "uniformly among those the crop annotates with any foreground), so rare classes are seen in most "
             "batches; otherwise the patch start is uniform; 0 keeps uniform patches", validator=v.between(0, 1))
    patch_per_buffer: int | None = setting(
        None, "Allen PatchPerBuffer: train from a buffer of this many pre-cut patches; None cuts a fresh patch "
              "every iteration", validator=v.at_least(1))
    epoch_shuffle: int = setting(5, "refresh the patch buffer every this many epochs (Allen epoch_shuffle)",
                                 validator=v.at_least(1))
    intensity_transforms: dict[str, Any] | None = setting(
        None, "training intensity augmentation on normalised raw: {'noise': {'std': s, 'p': p}, "
              "'contrast': {'range': [lo, hi]}, 'gamma': {'range': [lo, hi]}, 'blur': {'sigma': [lo, hi]}, "
              "'brightness': {'range': [lo, hi]}}; None disables")
    augmentations: Any = setting(None, "an albumentations pipeline (A.Compose) applied to 2D training patches "
                                       "(raw as image, targets and cost map as masks); None disables")
    train_raw_value_transforms: Any = setting(None, "callable applied to normalised training raw patches (tensor in, tensor out)")
    val_raw_value_transforms: Any = setting(None, "callable applied to normalised validation raw patches")
    target_value_transforms: Any = setting(None, "callable applied to target patches (C, *S) before the loss")
    spatial_transforms: dict[str, Any] | None = setting(
        factory=_default_transforms,
        doc="training augmentation: {'mirror': {'axes': {'x': p, ...}}, 'transpose': {'axes': ['x', 'y']}}; None disables",
    )
    augment_on_device: bool = setting(
        False, "apply spatial_transforms and intensity_transforms to the whole batch on the training device (GPU) "
               "instead of per patch in the DataLoader; same random draws, so the same distribution")
    normalization: str | dict[str, Any] = setting(
        "dtype", "input scaling, recorded in the checkpoint so predict repeats it: 'dtype' (integers to [0, 1] by "
                 "dtype range), 'none', {'mode': 'minmax', 'min': a, 'max': b}, {'mode': 'zscore', 'mean': m, "
                 "'std': s}, or {'mode': 'percentile', 'low': 1, 'high': 99.8} (fitted on the training data)")
    threshold: float = setting(0.5, "probability above which a voxel counts as the class (metrics, evaluate)",
                               validator=v.between(0.0, 1.0))
    storage_options: dict[str, Any] = setting(factory=dict, doc="fsspec options for remote paths (s3://)")
    output_zarr_format: Literal[2, 3] = setting(
        3, "zarr format of what predict and process write: 3 = OME-NGFF 0.5; 2 = OME-NGFF 0.4, for viewers and "
           "pipelines that do not read 0.5 yet")
    output_dtype: Literal["float32", "float16", "uint8"] = setting(
        "float32", "dtype predict writes class probabilities in: 'float32' (exact), 'float16' (half the bytes), or "
                   "'uint8' (round(p * 255), a quarter of the bytes, as csc/cellmap write them; process and evaluate "
                   "rescale to [0, 1] on read, so thresholds apply to steps of 1/255)")
    output_compressor: Literal["zstd", "lz4", "none"] = setting(
        "zstd", "chunk compression of predict's probabilities: 'zstd' (zarr's default, smallest), 'lz4' (blosc lz4, "
                "faster to write, larger), 'none'")
    cache_bytes: int | None = setting(
        None, "bytes of crop data (labels, cost maps, raw around each crop) held in memory, read once at start-up; "
              "beyond it the rest is read in storage-chunk blocks through an LRU cache; None = a quarter of RAM "
              "shared by the training processes of one machine",
        validator=v.at_least(1))
    process: ProcessConfig = setting(factory=ProcessConfig, doc="`bioloop process`: thresholds, connected "
                                     "components, watershed, minimum size, or your own process_func")

    def check(self) -> list[str]:
        problems = super().check()
        target = self.target_array_info
        if target is not None and not target.check() and not self.input_array_info.check():
            inp = self.input_array_info
            if any(t > i + 1e-6 for t, i in zip(target.extent, inp.extent)):
                problems.append(f"target_array_info: the target patch ({target.extent} nm) must fit inside the input "
                                f"patch ({inp.extent} nm); make its shape * scale at most input_array_info's")
            if inp.shape[0] == 1 and target.shape[0] != 1:
                problems.append("target_array_info: 2D input patches (z = 1) need 2D targets "
                                f"(got input {tuple(inp.shape)}, target {tuple(target.shape)})")
        if self.class_ids is not None:
            missing = [c for c in self.classes if c not in self.class_ids]
            extra = [c for c in self.class_ids if c not in self.classes]
            if missing or extra:
                problems.append(f"class_ids: needs exactly one id per class (missing {missing}, unknown {extra})")
        if self.label_layout in ("instances", "binary") and len(self.classes) != 1:
            problems.append(f"label_layout: '{self.label_layout}' labels one class; classes has {len(self.classes)} "
                            f"({list(self.classes)}); use 'class_ids' or 'per_class' for several")
        problems.extend(self._check_instance_targets())
        from bioloop.errors import ConfigError
        from bioloop.tasks.segmentation import transforms as T

        problems.extend(T.check_spatial_transforms(self.spatial_transforms))
        problems.extend(T.check_intensity_transforms(self.intensity_transforms))
        if self.augment_on_device:
            clash = [k for k in ("augmentations", "train_raw_value_transforms", "target_value_transforms",
                                 "instance_targets") if getattr(self, k) is not None]
            if clash:
                problems.append(f"augment_on_device: cannot be combined with {', '.join(clash)} (they run in the "
                                f"DataLoader after augmentation) (got {clash}); set augment_on_device = False "
                                "or remove them")
        for key in ("train_raw_value_transforms", "val_raw_value_transforms", "target_value_transforms"):
            problems.extend(T.check_value_transform(getattr(self, key), key))
        try:
            T.Normalizer.parse(self.normalization, "normalization")
        except ConfigError as exc:
            problems.append(str(exc))
        problems.extend(f"process.{p}" if not p.startswith("process.") else p
                        for p in self.process.check_against(self.classes))
        return problems

    def _check_instance_targets(self) -> list[str]:
        targets = self.instance_targets
        if targets is None:
            return []
        problems = [f"instance_targets.{p}" for p in targets.check(self.spatial_dims)]
        if self.label_layout != "instances":
            problems.append(f"instance_targets: needs instance labels, label_layout = 'instances' "
                            f"(got {self.label_layout!r})")
        rotate = (self.spatial_transforms or {}).get("rotate")
        if isinstance(rotate, dict) and rotate.get("target_interpolation", "nearest") != "nearest":
            problems.append("spatial_transforms.rotate.target_interpolation: instance ids must be rotated with "
                            f"'nearest' when instance_targets is set (got {rotate['target_interpolation']!r})")
        return problems

    @property
    def spatial_dims(self) -> int:
        """2 when patches are single z-slices (the model sees (y, x)), else 3."""
        return 2 if self.input_array_info.shape[0] == 1 else 3
