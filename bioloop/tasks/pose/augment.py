"""Image augmentation for pose frames that moves the keypoints with the pixels (albumentations 2).

Named pipelines (``training.imgaug``): ``default`` (none; resizing happens in the dataset),
``dlc`` (rotation +-25 deg, scale 0.8-1.2, brightness/contrast, motion blur), ``dlc-lr``
(dlc + horizontal flips that swap left/right keypoints), ``dlc-top-down`` (any rotation,
horizontal and vertical flips with swaps, for cropped animals). An albumentations transform
or ``A.Compose`` is accepted too; its own flips do not swap names. Keypoints that end up
outside the image become NaN (missing). Every draw is seeded from the caller's numpy rng.
"""

from __future__ import annotations

import re

import numpy as np

from bioloop.config.structure import did_you_mean
from bioloop.data.albu import albumentations, as_keypoint_pipeline, keypoint_compose
from bioloop.errors import ConfigError

__all__ = ["PIPELINES", "PoseAugmentation", "build_augmentation", "infer_flip_pairs",
           "flip_permutation"]

PIPELINES = ("default", "dlc", "dlc-lr", "dlc-top-down")
_SIDES = (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT"), ("l", "r"), ("L", "R"))


def infer_flip_pairs(names) -> list[tuple[str, str]]:
    """(left, right) name pairs: ``*_left/*_right``, ``left_*/right_*``, ``*L/*R`` and the like."""
    names = [str(n) for n in names]
    present = set(names)
    pairs = []
    for name in names:
        for left, right in _SIDES:
            other = _swap_side(name, left, right)
            if other and other != name and other in present:
                pairs.append((name, other))
                break
    return pairs


def _swap_side(name: str, left: str, right: str) -> str | None:
    """The right-side partner of a left-side ``name`` (side as a word or a trailing/leading letter)."""
    if len(left) > 1:  # a whole word between separators or at the ends
        if left.isupper():
            pattern = rf"(?<![A-Z]){left}(?![A-Z])"
        elif left[0].isupper():
            pattern = rf"{left}(?![a-z])"  # camelCase: earLeft
        else:
            pattern = rf"(?<![a-z]){left}(?![a-z])"
        if re.search(pattern, name):
            return re.sub(pattern, right, name, count=1)
        return None
    if name.endswith(left) and len(name) > 1:  # earL, ear_l
        return name[:-1] + right
    if name.startswith(left) and len(name) > 1 and not name[1].isalpha():  # l_ear
        return right + name[1:]
    if left.isupper() and name.startswith(left) and len(name) > 1 and name[1].isupper():  # LEar
        return right + name[1:]
    return None


def flip_permutation(names, pairs) -> np.ndarray:
    """``perm`` with ``keypoints[..., perm, :]`` swapping every (left, right) pair."""
    names = [str(n) for n in names]
    perm = np.arange(len(names))
    for left, right in pairs:
        i, j = names.index(left), names.index(right)
        perm[i], perm[j] = j, i
    return perm


class PoseAugmentation:
    """``aug(image, keypoints, rng) -> (image, keypoints)``; keypoints (..., K, 2) frame pixels.

    ``transform`` is an albumentations Compose (or None for no pixel transform); ``hflip`` and
    ``vflip`` are flip probabilities applied after it, swapping names by ``flip_index``.
    """

    def __init__(self, name: str, transform=None, *, hflip: float = 0.0, vflip: float = 0.0,
                 flip_index=None):
        self.name = name
        self.transform = transform
        self.hflip = float(hflip)
        self.vflip = float(vflip)
        self.flip_index = None if flip_index is None else np.asarray(flip_index, dtype=np.int64)

    def __repr__(self) -> str:
        return f"PoseAugmentation({self.name!r}, hflip={self.hflip}, vflip={self.vflip})"

    @property
    def is_identity(self) -> bool:
        return self.transform is None and self.hflip == 0 and self.vflip == 0

    def __call__(self, image: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator):
        kp = np.array(keypoints, dtype=np.float64, copy=True)
        if self.is_identity:
            return image, kp
        shape = kp.shape
        flat = kp.reshape(-1, 2)
        if self.transform is not None:
            image, flat = self._albumentations(image, flat, int(rng.integers(0, 2**31 - 1)))
        h, w = image.shape[:2]
        kp = flat.reshape(shape)
        flips = rng.random(2)  # drawn every call, so the rng stream does not depend on the outcome
        mirror = False
        if flips[0] < self.hflip:
            image = image[:, ::-1]
            kp[..., 0] = (w - 1) - kp[..., 0]
            mirror = not mirror
        if flips[1] < self.vflip:
            image = image[::-1]
            kp[..., 1] = (h - 1) - kp[..., 1]
            mirror = not mirror
        if mirror and self.flip_index is not None:
            kp = kp[..., self.flip_index, :]
        outside = (kp[..., 0] < -0.5) | (kp[..., 0] >= w - 0.5) | (kp[..., 1] < -0.5) | \
            (kp[..., 1] >= h - 0.5)
        kp[outside] = np.nan
        return np.ascontiguousarray(image), kp

    def _albumentations(self, image, flat, seed):
        valid = np.isfinite(flat).all(axis=1)
        self.transform.set_random_seed(seed)
        out = self.transform(image=np.ascontiguousarray(image), keypoints=flat[valid].astype(np.float32))
        moved = np.full_like(flat, np.nan)
        moved[valid] = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
        return out["image"], moved


def build_augmentation(spec, keypoint_names, where: str = "training.imgaug", *,
                       flip_pairs=None) -> PoseAugmentation:
    """A PoseAugmentation from a pipeline name or an albumentations transform/Compose.

    ``flip_pairs`` (list of (left, right) names) overrides ``infer_flip_pairs(keypoint_names)``.
    """
    names = [str(n) for n in keypoint_names]
    if spec is None:
        spec = "default"
    if not isinstance(spec, str):
        return PoseAugmentation(type(spec).__name__, _wrap_user(spec, where))
    if spec not in PIPELINES:
        raise ConfigError.at(where, f"unknown augmentation pipeline{did_you_mean(spec, PIPELINES)}",
                             got=spec, fix=f"use one of {', '.join(PIPELINES)} or an "
                             "albumentations A.Compose object")
    if spec == "default":
        return PoseAugmentation(spec)
    index = _flip_index(names, flip_pairs, where) if spec in ("dlc-lr", "dlc-top-down") else None
    if spec == "dlc":
        return PoseAugmentation(spec, _dlc(25.0))
    if spec == "dlc-lr":
        return PoseAugmentation(spec, _dlc(25.0), hflip=0.5, flip_index=index)
    return PoseAugmentation(spec, _dlc(180.0), hflip=0.5, vflip=0.5, flip_index=index)


def _flip_index(names, flip_pairs, where) -> np.ndarray:
    pairs = infer_flip_pairs(names) if flip_pairs is None else [tuple(p) for p in flip_pairs]
    seen = set()
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError.at(f"{where} flip_pairs", "each flip pair is (left, right)", got=pair)
        for name in pair:
            if name not in names:
                raise ConfigError.at(f"{where} flip_pairs", f"'{name}' is not a keypoint"
                                     f"{did_you_mean(name, names)}", got=pair,
                                     fix=f"the keypoints are: {', '.join(names)}")
            if name in seen:
                raise ConfigError.at(f"{where} flip_pairs", f"'{name}' is in more than one pair",
                                     got=pairs, fix="list each keypoint in at most one pair")
            seen.add(name)
    return flip_permutation(names, pairs)


def _dlc(max_angle: float):
    import cv2

    A = albumentations()
    return keypoint_compose([
        A.Affine(rotate=(-max_angle, max_angle), scale=(0.8, 1.2), border_mode=cv2.BORDER_CONSTANT,
                 fill=0, p=0.8),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        # a centred streak: the blur must not move the animal off its labels
        A.MotionBlur(blur_limit=(3, 7), allow_shifted=False, direction_range=(0.0, 0.0), p=0.3),
    ])


def _wrap_user(spec, where):
    """Re-wrap a user's transform(s) with our keypoint settings (xy, keep points that leave the image)."""
    pipeline = as_keypoint_pipeline(spec)
    if pipeline is not None:
        return pipeline
    raise ConfigError.at(where, "the augmentation must be a pipeline name or an albumentations "
                         "transform", got=type(spec).__name__,
                         fix=f"use one of {', '.join(PIPELINES)} or A.Compose([...])")
