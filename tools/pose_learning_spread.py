"""Spread of the pose learning test (tests/test_pose_e2e.py) over training seeds and thread counts.

    PYTHONPATH=$PWD python tools/pose_learning_spread.py --seeds 42 0 1 --threads 1 2

Each run trains from scratch (about 100 s on 2 idle cores) and prints one row: held-out pixel error,
median likelihoods of visible and hidden keypoints, and the two AUROCs the test checks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tests/conftest.py: spinning threads crawl on a busy box
os.environ.setdefault("BIOLOOP_PROGRESS", "0")

from tests.test_pose_e2e import train_and_score  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    args = parser.parse_args()
    print("seed threads error_px conf_visible conf_hidden auroc_hidden auroc_error wrong/visible wall_s", flush=True)
    for threads in args.threads:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                got = train_and_score(Path(tmp), seed=seed, threads=threads)
            print(f"{seed} {threads} {got['error']:.3f} {got['conf_visible']:.3f} {got['conf_hidden']:.3f} "
                  f"{got['auroc_hidden']:.3f} {got['auroc_error']:.3f} {got['wrong']}/{got['visible']} "
                  f"{got['seconds']:.0f}", flush=True)


if __name__ == "__main__":
    main()
