"""Benchmark pose video inference (pipeline vs model-only throughput) and heatmap target generation on CPU.

Run (about 1-2 minutes on 2 CPU cores):

    cd /work/main && .venv/bin/python tools/bench/bench_pose.py

1. Video inference (issue 4, item 11: ratio >= 0.85): a resnet18 heatmap model (8 keypoints,
   downsample_factor 2) on 128x160 inputs, batch 16. "pipeline" times ``predict_pose`` end to end
   on a synthetic 300-frame 128x160 mp4 from ``make_pose_dataset`` (decode and normalise on the
   background thread, forward, decode heatmaps, map back, write the CSV); "model-only" times
   forward passes on a batch already in memory. Runs alternate (model-only, pipeline, model-only,
   ...) because a shared machine's load drifts; each pipeline run is compared with the faster
   model-only run beside it. Also printed: the share of the pipeline's wall time spent inside
   forward (insensitive to load drift).
2. Heatmap targets (item 11: no per-sample Python loops): ``heatmaps.make_heatmaps`` on a batch of
   64 x 8 keypoints (128x160 input, stride 4) in one call vs one call per sample; the speed ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bioloop.data.synthetic_pose import SKELETON_NAMES, make_pose_dataset  # noqa: E402
from bioloop.tasks.pose.heatmaps import make_heatmaps  # noqa: E402
from bioloop.tasks.pose.models import build_lp_model  # noqa: E402
from bioloop.tasks.pose.predict import predict_pose  # noqa: E402
from bioloop.tasks.pose.task import TASK  # noqa: E402
from _timing import model_only  # noqa: E402

HW = (128, 160)


def _settings(batch: int):
    return SimpleNamespace(keypoint_names=list(SKELETON_NAMES),
                           image_resize_dims=SimpleNamespace(height=HW[0], width=HW[1]),
                           dali=SimpleNamespace(base_predict_sequence_length=batch,
                                                context_predict_sequence_length=batch),
                           eval=SimpleNamespace(save_vids_after_training=False, colormap="cool",
                                                confidence_thresh_for_vid=0.9))


def video_inference(tmp: Path, frames: int, batch: int, repeats: int, rounds: int) -> None:
    start = time.perf_counter()
    data = make_pose_dataset(tmp / "data", n_frames=frames, image_size=HW, n_videos=1, label_every=frames)
    print(f"synthetic video: {frames} frames {HW[0]}x{HW[1]} ({time.perf_counter() - start:.1f} s to render)")
    torch.manual_seed(0)
    model = build_lp_model("heatmap", "resnet18", len(SKELETON_NAMES), downsample_factor=2).eval()
    x = torch.randn(batch, 3, *HW)
    with torch.inference_mode():
        model(x)  # warm-up for both measurements
    calls, forward = [], model.forward

    def timed(t):
        begin = time.perf_counter()
        out = forward(t)
        calls.append(time.perf_counter() - begin)
        return out

    cfg = _settings(batch)
    bare, pipeline, busy = [model_only(model, x, repeats)], [], []
    for r in range(rounds):
        calls.clear()
        model.forward = timed
        begin = time.perf_counter()
        predict_pose(cfg, model, TASK, extras={}, input=data.video_paths[0], output=tmp / f"pred{r}.csv",
                     show_progress=False)
        seconds = time.perf_counter() - begin
        model.forward = forward
        pipeline.append(frames / seconds)
        busy.append(sum(calls) / seconds)
        bare.append(model_only(model, x, repeats))
    ratios = [p / max(a, b) for p, a, b in zip(pipeline, bare, bare[1:])]
    print(f"resnet18 heatmap model, {HW[0]}x{HW[1]} input, batch {batch}; {len(calls)} forward batches per "
          "pipeline run")
    print("model-only frames/s: " + ", ".join(f"{v:.1f}" for v in bare))
    print("pipeline frames/s:   " + ", ".join(f"{v:.1f}" for v in pipeline))
    print("ratio per round:     " + ", ".join(f"{v:.3f}" for v in ratios))
    print("share of pipeline wall time spent in forward: " + ", ".join(f"{v:.3f}" for v in busy))
    print(f"ratio pipeline / model-only (median): {float(np.median(ratios)):.3f}  (target >= 0.85)")


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - begin)
    return best


def heatmap_targets(batch: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    kp = torch.from_numpy(rng.uniform(0, HW[1] - 1, (batch, len(SKELETON_NAMES), 2)).astype(np.float32))
    kp[::7, 2] = float("nan")
    args = dict(image_size=HW, stride=4, sigma=1.25)
    batched, _ = make_heatmaps(kp, **args)
    looped = torch.cat([make_heatmaps(kp[i:i + 1], **args)[0] for i in range(batch)])
    assert torch.allclose(batched, looped)
    one = _best_of(lambda: make_heatmaps(kp, **args), repeats)
    loop = _best_of(lambda: [make_heatmaps(kp[i:i + 1], **args) for i in range(batch)], repeats)
    print(f"make_heatmaps, {batch} samples x {len(SKELETON_NAMES)} keypoints, {HW[0]}x{HW[1]} input, stride 4 "
          f"(best of {repeats}): batched {one * 1e3:.2f} ms, per-sample loop {loop * 1e3:.2f} ms, "
          f"speed ratio {loop / one:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4, help="batches per model-only run")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline runs (model-only runs around each)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        video_inference(Path(folder), args.frames, args.batch, args.repeats, args.rounds)
    heatmap_targets(64, repeats=20)


if __name__ == "__main__":
    main()
