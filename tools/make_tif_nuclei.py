"""Write a small tif example for docs/getting-started.md: five 2D images of touching nuclei and their labels.

    python tools/make_tif_nuclei.py DEST     # DEST/images/cell{0..4}.tif (uint16), DEST/labels/cell{0..4}.tif (ids)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage


def main(dest: str) -> None:
    root = Path(dest)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    for k in range(5):
        ids = np.zeros((128, 128), np.uint16)
        for n in range(1, 13):  # 12 discs placed at random, so some touch
            cy, cx, r = *rng.uniform(8, 120, 2), rng.uniform(6, 11)
            ids[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (ids == 0)] = n
        image = ndimage.gaussian_filter(np.where(ids > 0, 900.0, 200.0), 1.0) + rng.normal(0, 60, ids.shape)
        tifffile.imwrite(root / "images" / f"cell{k}.tif", np.clip(image, 0, 4095).astype(np.uint16))
        tifffile.imwrite(root / "labels" / f"cell{k}.tif", ids)
    print(f"wrote {root}/images and {root}/labels (cell0 ... cell4)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
