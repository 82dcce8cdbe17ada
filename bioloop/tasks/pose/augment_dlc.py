"""DeepLabCut 3's ``data.train`` augmentation section as an albumentations pipeline.

The transforms and their probabilities are DeepLabCut's (``build_transforms``): ``affine`` (p 0.9 by
default, rotation +-r degrees, scaling range, translation 0..t pixels, aspect ratio kept), ``hflip``
(a plain flip: like DeepLabCut, names are not swapped), ``hist_eq``, ``motion_blur`` and ``covering``
(10 holes of 1-5 % of the side) at p 0.5, ``gaussian_noise`` at p 0.5. One difference: DeepLabCut draws
the noise *variance* uniformly in [0, sigma^2], albumentations 2 draws the standard deviation uniformly
in [0, sigma]. ``normalize_images: true`` is what bioloop always does. Keys with no counterpart raise
ValueError naming them.
"""

from __future__ import annotations

_KNOWN = {"affine", "hflip", "hist_eq", "motion_blur", "covering", "gaussian_noise", "normalize_images",
          "collate"}


def dlc_augmentation(section: dict):
    """The albumentations ``Compose`` for DeepLabCut's ``data.train`` dict (``collate`` is left to the caller)."""
    from bioloop.data.albu import albumentations

    A = albumentations()
    section = dict(section or {})
    unknown = sorted(k for k, v in section.items() if k not in _KNOWN and v not in (False, None))
    if unknown:
        raise ValueError(f"augmentations {unknown} have no counterpart in bioloop; remove them")
    if section.get("normalize_images", True) is not True:
        raise ValueError("bioloop always normalises images (normalize_images: true)")
    transforms = []
    hflip = section.get("hflip")
    if hflip:
        if isinstance(hflip, dict):
            raise ValueError("hflip with options (symmetries) has no counterpart; write hflip: true, or use "
                             "imgaug='dlc-lr' with flip_pairs to swap left/right keypoints")
        transforms.append(A.HorizontalFlip(p=0.5 if hflip is True else float(hflip)))
    affine = section.get("affine")
    if affine is not None:
        affine = dict(affine)
        extra = sorted(set(affine) - {"p", "rotation", "scaling", "translation"})
        if extra:
            raise ValueError(f"affine keys {extra} have no counterpart; use p, rotation, scaling, translation")
        rotation, scaling, shift = affine.get("rotation"), affine.get("scaling"), affine.get("translation")
        transforms.append(A.Affine(scale=tuple(scaling) if scaling is not None else (1.0, 1.0),
                                   rotate=(-rotation, rotation) if rotation is not None else 0.0,
                                   translate_px=(0, shift) if shift is not None else None,
                                   p=affine.get("p", 0.9), keep_ratio=True))
    if section.get("hist_eq"):
        transforms.append(A.Equalize(p=0.5))
    if section.get("motion_blur"):
        transforms.append(A.MotionBlur(p=0.5))
    if section.get("covering"):
        transforms.append(A.CoarseDropout(num_holes_range=(10, 10), hole_height_range=(0.01, 0.05),
                                          hole_width_range=(0.01, 0.05), p=0.5))
    noise = section.get("gaussian_noise")
    if noise:
        sigma = float(noise) if isinstance(noise, (int, float)) and not isinstance(noise, bool) else 0.05 * 255
        transforms.append(A.GaussNoise(std_range=(0.0, sigma / 255.0), per_channel=True, p=0.5))
    return A.Compose(transforms)
