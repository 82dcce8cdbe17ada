"""Settings of the segmentation task (names follow the CellMap toolkit, csc)."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from bioloop.config import validators as v
from bioloop.config.schema import TrainingConfig, setting

_AXES = ("z", "y", "x")
_TRANSFORMS = ("mirror", "transpose")


@attrs.frozen(kw_only=True)
class ArrayInfo:
    """Patch geometry: voxels per axis (z, y, x) and the voxel size in nm it is read at."""

    shape: tuple[int, ...] = setting(doc="patch shape in voxels, (z, y, x); z = 1 makes 2D patches",
                                     validator=v.each_positive)
    scale: tuple[float, ...] = setting(doc="voxel size in nm, (z, y, x)", validator=v.each_positive)

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
class SegmentationConfig(TrainingConfig):
    """Semantic segmentation of 2D/3D volumes stored as OME-NGFF zarr."""

    classes: list[str] = setting(factory=lambda: ["nuc", "er"], doc="classes to predict, one output channel each",
                                 validator=v.all_of(v.non_empty, v.unique))
    datasplit_path: str = setting("datasplit.csv", "csc-style CSV listing train/validate crops", path=True)
    input_array_info: ArrayInfo = setting(
        factory=lambda: ArrayInfo(shape=(1, 128, 128), scale=(8.0, 8.0, 8.0)),
        doc="{'shape': (z, y, x) voxels, 'scale': (z, y, x) nm} of the input patches",
    )
    target_array_info: ArrayInfo | None = setting(None, "geometry of the target patches; None uses input_array_info")
    spatial_transforms: dict[str, Any] | None = setting(
        factory=_default_transforms,
        doc="training augmentation: {'mirror': {'axes': {'x': p, ...}}, 'transpose': {'axes': ['x', 'y']}}; None disables",
    )
    normalization: Literal["dtype", "none"] = setting(
        "dtype", "input scaling: 'dtype' maps integer raw to [0, 1] by its dtype's range; 'none' keeps values"
    )
    threshold: float = setting(0.5, "probability above which a voxel counts as the class (metrics, evaluate)",
                               validator=v.between(0.0, 1.0))
    storage_options: dict[str, Any] = setting(factory=dict, doc="fsspec options for remote paths (s3://)")

    def check(self) -> list[str]:
        problems = super().check()
        target = self.target_array_info
        if target is not None and target != self.input_array_info:
            problems.append(
                "target_array_info: a target geometry different from input_array_info is not supported yet "
                f"(got {target!r}); remove it or make it equal to input_array_info"
            )
        problems.extend(_check_transforms(self.spatial_transforms))
        return problems

    @property
    def spatial_dims(self) -> int:
        """2 when patches are single z-slices (the model sees (y, x)), else 3."""
        return 2 if self.input_array_info.shape[0] == 1 else 3


def _check_transforms(spec) -> list[str]:
    if not spec:
        return []
    problems = []
    for name, params in spec.items():
        if name not in _TRANSFORMS:
            from bioloop.config.structure import did_you_mean

            problems.append(f"spatial_transforms: unknown transform '{name}'{did_you_mean(name, _TRANSFORMS)}; "
                            f"available: {', '.join(_TRANSFORMS)}")
            continue
        axes = params.get("axes") if isinstance(params, dict) else None
        if axes is None or set(params) - {"axes"}:
            problems.append(f"spatial_transforms.{name}: expected {{'axes': ...}} (got {params!r})")
            continue
        names = list(axes)
        bad = [a for a in names if a not in _AXES]
        if bad:
            problems.append(f"spatial_transforms.{name}.axes: unknown axis {bad[0]!r}; use 'z', 'y' or 'x'")
        if name == "mirror":
            if not isinstance(axes, dict) or not all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in axes.values()):
                problems.append(f"spatial_transforms.mirror.axes: expected {{axis: probability in [0, 1]}} (got {axes!r})")
        if name == "transpose" and len(names) < 2:
            problems.append(f"spatial_transforms.transpose.axes: name at least two axes (got {axes!r})")
    return problems
