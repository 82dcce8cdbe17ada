"""Spread over seeds of the dense-cells learning test (tests/test_seg_instances_learn.py).

    PYTHONPATH=. python tools/seg_instances_spread.py --seeds 0 1 2 3

Per seed: VOI (bits, split + merge) of affinities + mutex watershed, of connected components of the true
foreground, and of a classical watershed of the smoothed raw image (seeds at its local maxima, the best of
three seed spacings, an over-segmentation baseline); then the ratios the test's margin rests on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def raw_watershed(root: Path) -> float:
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from bioloop.data.ngff import open_volume
    from bioloop.tasks.segmentation.instance_metrics import voi

    raw_vol = open_volume(root / "data" / "cells.zarr" / "raw")
    truth_vol = open_volume(root / "data" / "cells.zarr" / "labels" / "crop3")
    truth = truth_vol.read((0, 0, 0), truth_vol.spatial_shape)
    start = [int(round(v)) for v in raw_vol.world_to_voxel(truth_vol.translation)]
    raw = raw_vol.read(start, truth.shape)[0].astype(np.float32)
    smooth = ndimage.gaussian_filter(raw, 1.5)
    best = np.inf
    for spacing in (3, 5, 7):
        peaks = peak_local_max(smooth, min_distance=spacing)
        markers = np.zeros(smooth.shape, np.int64)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        v = voi(watershed(-smooth, markers)[None], truth)
        best = min(best, v["split"] + v["merge"])
    return best


def main() -> None:
    import torch

    from tests.test_seg_instances_learn import run

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            scores = run(Path(tmp), seed)
            scores["raw watershed"] = raw_watershed(Path(tmp))
        rows.append(scores)
        print(f"seed {seed}: " + ", ".join(f"{k} VOI {v:.3f}" for k, v in scores.items()), flush=True)
    ratio = [r["affinities"] / r["components"] for r in rows]
    versus = [r["affinities"] / r["raw watershed"] for r in rows]
    print(f"affinities / components: {min(ratio):.2f}-{max(ratio):.2f}; "
          f"affinities / raw watershed: {min(versus):.2f}-{max(versus):.2f}")


if __name__ == "__main__":
    main()
