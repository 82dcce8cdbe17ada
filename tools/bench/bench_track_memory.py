"""Peak memory of one tracking clip on large frames: streamed crops vs holding the clip (issue 11, item 12).

    python tools/bench/bench_track_memory.py [--size 2048] [--frames 32] [--objects 10]

Writes a synthetic video of ``--frames`` frames of ``--size`` x ``--size`` pixels (make_tracking_dataset,
RGB mp4 + .slp), then builds one ``TrackingClips`` item of the whole video (clip_length = frames), each
in a fresh process, and reports the growth of the peak RSS over the process's RSS before the item:

- streamed: what prediction, validation and training without a pixel augmentation do now (each
  frame is read, cropped in its own dtype, and dropped);
- whole clip: the path that an albumentations pixel transform needs (every frame of the clip as
  float32, transformed together); before the streamed path every item took it.

Prints both peaks (MiB) and their ratio, and checks that both give the same crops.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

_CHILD = r"""
import json, resource, sys, os
import numpy as np
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from bioloop.tasks.tracking.io import read_slp
from bioloop.tasks.tracking.data import TrackingClips
slp, frames, mode, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
seqs = read_slp(slp)
seqs[0].read_frame(0)  # open the video reader first: its buffers are not the clip's
def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
base = rss_mib()
settings = {"crop_size": 64, "padding": 0, "anchors": "centroid"}
if mode == "clip":  # a pixel transform that changes nothing forces the whole-clip path
    settings["augmentations"] = {"Rotate": {"limit": 0, "p": 0.0}}
ds = TrackingClips(seqs, [(0, 0, frames)], settings, train=mode == "clip")
item = ds[(0, 0)] if mode == "clip" else ds[0]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
np.save(out, item["crops"].numpy())
print(json.dumps({"base": base, "peak": peak, "instances": int(len(item["ids"]))}))
"""


def _run(slp: str, frames: int, mode: str, out: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-c", _CHILD, slp, str(frames), mode, out], capture_output=True,
                         text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    from bioloop.data.synthetic_tracking import make_tracking_dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--objects", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_tracking_dataset(Path(tmp) / "data", n_frames=args.frames, n_objects=args.objects,
                                   image_size=(args.size, args.size), layouts=("slp",))
        got = {m: _run(ds.slp_path, args.frames, m, str(Path(tmp) / f"{m}.npy")) for m in ("streamed", "clip")}
        same = np.array_equal(np.load(Path(tmp) / "streamed.npy"), np.load(Path(tmp) / "clip.npy"))
    grow = {m: g["peak"] - g["base"] for m, g in got.items()}
    clip_mib = args.frames * args.size * args.size * 3 * 4 / 2**20
    print(f"{args.frames} frames of {args.size}x{args.size} RGB, {got['streamed']['instances']} instances "
          f"(the clip as float32: {clip_mib:.0f} MiB)")
    print(f"peak RSS growth, streamed crops: {grow['streamed']:.0f} MiB")
    print(f"peak RSS growth, whole clip:     {grow['clip']:.0f} MiB")
    print(f"ratio streamed / whole clip: {grow['streamed'] / grow['clip']:.3f}; same crops: {same}")


if __name__ == "__main__":
    main()
