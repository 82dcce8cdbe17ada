"""albumentations, imported without its network update check, and keypoint pipelines in our convention.

Keypoints are (x, y) pixels; points that leave the image are kept (the caller marks them
missing), so every point stays in its row.
"""

from __future__ import annotations

import os


def albumentations():
    """The albumentations module (``NO_ALBUMENTATIONS_UPDATE=1`` first: no network call at import)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A


def keypoint_compose(transforms):
    """``A.Compose(transforms)`` moving (x, y) keypoints with the image and keeping those that leave it."""
    import warnings

    A = albumentations()
    with warnings.catch_warnings():  # image-only pipelines (noise, blur) leave the points as they are: fine
        warnings.filterwarnings("ignore", message="Got processor for keypoints, but no transform to process it")
        return A.Compose(transforms, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))


def as_keypoint_pipeline(spec):
    """A user's albumentations transform or Compose re-wrapped by ``keypoint_compose``; None if ``spec`` is
    not an albumentations object (the caller reports that with its own setting name)."""
    A = albumentations()
    from albumentations.core.composition import BaseCompose
    from albumentations.core.transforms_interface import BasicTransform

    if isinstance(spec, A.Compose):
        return keypoint_compose(list(spec.transforms))
    if isinstance(spec, (BaseCompose, BasicTransform)):
        return keypoint_compose([spec])
    return None
