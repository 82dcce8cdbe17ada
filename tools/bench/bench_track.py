"""Tracking throughput vs model-only forward throughput (issue 5, item 7: target ratio >= 0.8).

    python tools/bench/bench_track.py [--frames 1000] [--objects 10] [--device cuda] [--batch 64]

Writes a synthetic video (make_tracking_dataset: ``--frames`` frames, ``--objects`` objects) and
times, on the same GTR model and the same batch sizes:

- tracking: ``track_sequence`` end to end (frame reading, crops, encode_crops in batches of
  ``--batch`` instances, one transformer call per frame in the Tracker, Hungarian assignment);
- model only: the same crops (pre-cut, already on the device) through encode_crops in the same
  batches, plus one transformer call per frame on a window of the same size (window_size frames).

Prints frames/s of both and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CONFIG = """
task = "tracking"
model = {{"d_model": 256, "nhead": 8, "num_encoder_layers": 1, "num_decoder_layers": 1, "dropout": 0.0,
         "dropout_attn_head": 0.0, "encoder_cfg": {{"model_name": "resnet18", "backend": "torchvision", "in_chans": 3}}}}
dataset = {{"train_dataset": {{"slp_files": [{slp!r}], "crop_size": 32, "padding": 4, "clip_length": 32}}}}
tracker = {{"window_size": 8}}
runner = {{"persistent_tracking": {{"test": True}}}}
device = {device!r}
"""


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from bioloop import api
    from bioloop.data.synthetic_tracking import make_tracking_dataset
    from bioloop.tasks import get_task
    from bioloop.tasks.tracking.data import TrackingClips
    from bioloop.tasks.tracking.io import read_slp
    from bioloop.tasks.tracking.predict import _clips, encode, track_sequence

    tmp = Path(tempfile.mkdtemp(prefix="bench_track_"))
    t0 = time.perf_counter()
    data = make_tracking_dataset(tmp / "data", n_frames=args.frames, n_objects=args.objects, image_size=(256, 320),
                                 layouts=("slp",), seed=0)
    print(f"data: {args.frames} frames x {args.objects} objects in {time.perf_counter() - t0:.1f} s")
    (tmp / "cfg.py").write_text(CONFIG.format(slp=data.slp_path, device=args.device))
    cfg = api.load_config(tmp / "cfg.py")
    device = torch.device(args.device)
    model = get_task("tracking").build_model(cfg).to(device).eval()
    seq = read_slp(data.slp_path)[0]
    settings = cfg.dataset.train_dataset

    with torch.no_grad():  # warm-up (cuDNN autotune, allocator)
        track_sequence(model, _subset(seq, 64), cfg, batch_size=args.batch)
    _sync(device)
    t0 = time.perf_counter()
    ids = track_sequence(model, seq, cfg, batch_size=args.batch)
    _sync(device)
    t_track = time.perf_counter() - t0
    assert sum(int((k >= 0).sum()) for k in ids) == sum(len(f) for f in seq.frames)

    # model only: the same crops, pre-cut and resident on the device
    items = TrackingClips([seq], _clips(len(seq), settings.clip_length), settings, train=False)
    chunks = [items[i] for i in range(len(items))]
    crops = [c["crops"].to(device) for c in chunks]
    boxes = [c["boxes"].to(device) for c in chunks]
    frames = [c["frames"].numpy() for c in chunks]
    w = cfg.tracker.window_size
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        for cr, bx, fr in zip(crops, boxes, frames):
            feats = encode(model, cr, args.batch, device)
            starts = np.searchsorted(fr, np.unique(fr))
            ends = np.r_[starts[1:], len(fr)]
            for k in range(1, len(starts)):  # one window per query frame: up to w - 1 previous frames
                a, b = starts[max(0, k - w + 1)], ends[k]
                q = torch.arange(starts[k] - a, b - a, device=device)
                model(None, bx[a:b], torch.from_numpy(fr[a:b]).to(device), q, ref_features=feats[a:b])
        _sync(device)
        t_model = time.perf_counter() - t0
    n = len(seq)
    result = {"frames": n, "instances": int(sum(len(f) for f in seq.frames)), "device": str(device),
              "tracking_fps": n / t_track, "model_only_fps": n / t_model, "ratio": t_model / t_track}
    print(f"device {device}: tracking {result['tracking_fps']:.1f} frames/s end to end, model only "
          f"{result['model_only_fps']:.1f} frames/s -> ratio {result['ratio']:.2f} (target >= 0.8)")
    return result


def _subset(seq, n):
    import attrs

    return attrs.evolve(seq, frames=seq.frames[:n])


if __name__ == "__main__":
    main()
