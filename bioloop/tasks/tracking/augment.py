"""Augmentation of tracking clips: one albumentations draw for every frame, plus node/instance dropout.

``augmentations`` (the reference's dict) maps albumentations class names to their parameters,
``{"Rotate": {"limit": 45, "p": 0.3}, "MotionBlur": {"blur_limit": [3, 7], "p": 0.3}}``, and may
name our ``NodeDropout {"p", "n"}`` and ``InstanceDropout {"p", "n"}``. A ready albumentations
transform or ``A.Compose`` is accepted too. The albumentations pipeline runs once per clip on the
stacked frames (albumentations' ``images`` target), so every frame gets the identical transform
and the motion between frames stays real; points and box corners move with the pixels. Every
random draw comes from the caller's numpy rng.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np

from bioloop.config.structure import did_you_mean
from bioloop.data.albu import albumentations, as_keypoint_pipeline, keypoint_compose
from bioloop.errors import ConfigError

__all__ = ["ClipAugmentation", "InstanceDropout", "NodeDropout", "build_clip_augmentation"]

DEFAULT_WHERE = "dataset.train_dataset.augmentations"
_OURS = ("NodeDropout", "InstanceDropout")
_ABSTRACT = {"BasicTransform", "DualTransform", "ImageOnlyTransform", "Transform3D", "NoOp"}


def albumentations_names() -> list[str]:
    """Names of the albumentations transform classes a config may use."""
    A = albumentations()
    from albumentations.core.transforms_interface import BasicTransform

    names = []
    for name in dir(A):
        obj = getattr(A, name)
        if inspect.isclass(obj) and issubclass(obj, BasicTransform) and name not in _ABSTRACT:
            names.append(name)
    return names


class _Dropout:
    """Shared settings check of NodeDropout and InstanceDropout: probability ``p``, at most ``n``."""

    def __init__(self, p: float = 0.5, n: int = 1, *, where: str = DEFAULT_WHERE):
        name = type(self).__name__
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError.at(f"{where}.{name}.p", "must be a probability in [0, 1]", got=p)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError.at(f"{where}.{name}.n", "must be a whole number >= 0", got=n)
        self.p = float(p)
        self.n = int(n)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, n={self.n})"


class NodeDropout(_Dropout):
    """Each node of each instance is dropped (-> NaN) with probability ``p``; at most ``n`` per instance.

    Anchors on a dropped node fall back to the instance's centroid.
    """

    def __call__(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``points (n, P, 2)`` -> a copy with the dropped nodes set to NaN."""
        pts = np.array(points, dtype=np.float64, copy=True)
        if pts.size == 0:
            return pts
        draws = rng.random(pts.shape[:2])  # (n, P), drawn whatever p is: a stable rng stream
        drop = draws < self.p
        if self.n < pts.shape[1]:  # keep the n lowest draws among the dropped ones
            rank = np.argsort(np.argsort(draws, axis=1, kind="stable"), axis=1, kind="stable")
            drop &= rank < self.n
        pts[drop] = np.nan
        return pts


class InstanceDropout(_Dropout):
    """With probability ``p`` a frame loses between 1 and ``n`` of its instances (chosen at random)."""

    def __call__(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """A boolean keep-mask over the ``count`` instances of one frame."""
        keep = np.ones(count, dtype=bool)
        hit, k, order = rng.random(), rng.integers(1, max(self.n, 1) + 1), rng.permutation(count)
        if count and self.n > 0 and hit < self.p:
            keep[order[: min(int(k), count)]] = False
        return keep


class ClipAugmentation:
    """``transform`` (an albumentations Compose or None), ``node_dropout``, ``instance_dropout``."""

    def __init__(self, transform=None, node_dropout: NodeDropout | None = None,
                 instance_dropout: InstanceDropout | None = None):
        self.transform = transform
        self.node_dropout = node_dropout
        self.instance_dropout = instance_dropout

    def __repr__(self) -> str:
        return (f"ClipAugmentation(transform={self.transform!r}, node_dropout={self.node_dropout!r}, "
                f"instance_dropout={self.instance_dropout!r})")

    @property
    def is_identity(self) -> bool:
        return self.transform is None and self.node_dropout is None and self.instance_dropout is None

    def images(self, images: np.ndarray, points: np.ndarray, rng: np.random.Generator):
        """``images (T, H, W, C)`` float32 and ``points (M, 2)`` -> the same, transformed identically.

        NaN points stay NaN; points that leave the image keep their (outside) coordinates.
        """
        seed = int(rng.integers(0, 2**31 - 1))  # drawn even without a transform: a stable rng stream
        if self.transform is None or len(images) == 0:
            return images, points
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        valid = np.isfinite(pts).all(axis=1)
        self.transform.set_random_seed(seed)
        out = self.transform(images=np.ascontiguousarray(images),
                             keypoints=pts[valid].astype(np.float32).reshape(-1, 2))
        moved = np.full_like(pts, np.nan)
        moved[valid] = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
        imgs = np.asarray(out["images"])
        if imgs.ndim == 3:  # albumentations may drop a single channel
            imgs = imgs[..., None]
        return imgs, moved


def build_clip_augmentation(spec: Any, where: str = DEFAULT_WHERE) -> ClipAugmentation:
    """A ClipAugmentation from None, a ``{ClassName: params}`` dict, or an albumentations object."""
    if spec is None or isinstance(spec, ClipAugmentation):
        return spec if spec is not None else ClipAugmentation()
    if not isinstance(spec, dict):
        return ClipAugmentation(_wrap_user(spec, where))
    node = instance = None
    transforms = []
    known = None
    for name, params in spec.items():
        params = {} if params is None else params
        if isinstance(name, str) and name in _OURS:
            if not isinstance(params, dict):
                raise ConfigError.at(f"{where}.{name}", "parameters must be a dict like {'p': 0.5, 'n': 1}",
                                     got=params)
            _check_keys(params, ("p", "n"), f"{where}.{name}")
            if name == "NodeDropout":
                node = NodeDropout(**params, where=where)
            else:
                instance = InstanceDropout(**params, where=where)
            continue
        known = known if known is not None else albumentations_names()
        if name not in known:
            raise ConfigError.at(where, f"unknown augmentation{did_you_mean(name, [*_OURS, *known])}",
                                 got=name, fix="keys must be albumentations class names (exact case), "
                                 "NodeDropout or InstanceDropout")
        transforms.append(_make_transform(name, params, f"{where}.{name}"))
    return ClipAugmentation(keypoint_compose(transforms) if transforms else None, node, instance)


def _check_keys(params: dict, allowed, where: str) -> None:
    for key in params:
        if key not in allowed:
            raise ConfigError.at(where, f"unknown parameter{did_you_mean(key, allowed)}", got=key,
                                 fix=f"use {', '.join(allowed)}")


def _make_transform(name: str, params, where: str):
    A = albumentations()
    if not isinstance(params, dict):
        raise ConfigError.at(where, "parameters must be a dict of keyword arguments", got=params,
                             fix=f"e.g. {{'{name}': {{'p': 0.5}}}}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = getattr(A, name)(**params)
        for warning in caught:  # albumentations only warns about unknown arguments
            if "not valid for transform" in str(warning.message):
                raise ValueError(str(warning.message))
        return transform
    except Exception as exc:  # bad values are TypeError/ValidationError
        detail = " ".join(str(exc).split())
        raise ConfigError.at(where, f"albumentations rejected the parameters: {detail}", got=params,
                             fix=f"see the documentation of albumentations.{name}") from None


def _wrap_user(spec, where):
    """Re-wrap a user's transform(s) with our keypoint settings (xy, keep points that leave the image)."""
    pipeline = as_keypoint_pipeline(spec)
    if pipeline is not None:
        return pipeline
    raise ConfigError.at(where, "augmentations must be a dict {ClassName: params} or an albumentations "
                         "transform", got=type(spec).__name__,
                         fix="e.g. {'Rotate': {'limit': 45, 'p': 0.3}, 'NodeDropout': {'p': 0.1, 'n': 1}}")
