"""Benchmark blockwise prediction on CPU: pipeline vs model-only throughput, and peak memory vs volume size.

Run (about 2 minutes on 2 CPU cores):

    cd /work/main && .venv/bin/python tools/bench/bench_predict.py

1. Throughput: the default ``3d_unet`` (5.6 M parameters) on 48^3 patches, batch 2. "model-only" times
   forward passes on a batch already in memory; "pipeline" times ``predict_volume`` over a uint8
   OME-NGFF volume with the default block shape (read, normalise, tile, forward, blend, write). The
   pipeline is credited only with the tiles one whole-volume tiling needs (tiles recomputed at
   block borders count against it), so the ratio is the pipeline's overhead (target >= 0.85). The runs alternate (model-only,
   pipeline, model-only, ...) because a shared machine's load drifts; each pipeline run is compared
   with the faster model-only run beside it. Also printed: the share of the pipeline's wall time
   spent inside forward (insensitive to load drift).
2. Memory: ``predict_volume`` with a one-layer model, 64^3 tiles without overlap (so every block reads
   the same box) and 64^3 blocks, on a volume and on one 2x larger per axis (8x the voxels), each in
   a fresh subprocess; the peak RSS above the RSS before the call (VmHWM after resetting it) and
   tracemalloc's peak (numpy buffers) should not grow with the volume.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bioloop.data.ngff import write_volume  # noqa: E402
from bioloop.models import build_model  # noqa: E402
from bioloop.tasks.segmentation import predict as P  # noqa: E402
from _timing import model_only  # noqa: E402

SCALE = (8.0, 8.0, 8.0)


def _settings(patch, batch):
    cfg = SimpleNamespace(classes=["a", "b"], input_array_info=SimpleNamespace(shape=patch, scale=SCALE),
                          normalization="dtype", spatial_dims=3, storage_options={}, validation_batch_size=batch,
                          batch_size=batch)
    extras = {"classes": ["a", "b"], "input_shape": list(patch), "input_scale": list(SCALE),
              "normalization": "dtype", "spatial_dims": 3, "activation": "sigmoid"}
    return cfg, extras


def _volume(path: Path, shape, seed=0) -> str:
    data = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    write_volume(path, data, scale=SCALE, chunks=(64, 64, 64), overwrite=True)
    return str(path)


def throughput(tmp: Path, patch: int, batch: int, shape, block, repeats: int, rounds: int) -> None:
    """Alternate model-only and pipeline runs (the machine's load drifts); ratio per round, then the median."""
    model = build_model("3d_unet", {"in_channels": 1, "out_channels": 2}, where="bench").eval()
    x = torch.rand(batch, 1, patch, patch, patch)
    with torch.inference_mode():
        model(x)  # warm-up (kernel selection) for both measurements
    cfg, extras = _settings((patch,) * 3, batch)
    path = _volume(tmp / "raw.zarr" / "throughput", shape)
    calls, forward = [], model.forward

    def timed(t):
        start = time.perf_counter()
        out = forward(t)
        calls.append((t.shape[0], time.perf_counter() - start))
        return out

    model.forward = timed
    single = int(np.prod([len(P.axis_starts(n, patch, round(patch * 0.75))) for n in shape]))
    bare, pipeline, busy = [model_only(model, x, repeats)], [], []
    for _ in range(rounds):
        calls.clear()
        start = time.perf_counter()
        P.predict_volume(cfg, model, extras=extras, input=path, output=str(tmp / "throughput.zarr"),
                         block_shape=block, overwrite=True, show_progress=False)
        seconds = time.perf_counter() - start
        tiles, batches = sum(n for n, _ in calls), len(calls)
        pipeline.append(single / seconds)  # useful tiles/s: tiles a whole-volume tiling needs, so any
        # tile computed twice (at block borders) counts against the pipeline
        busy.append(sum(s for _, s in calls) / seconds)
        bare.append(model_only(model, x, repeats))
    # each pipeline run against the faster of the model-only runs around it: a conservative ratio
    ratios = [p / max(a, b) for p, a, b in zip(pipeline, bare, bare[1:])]
    print(f"3d_unet, {patch}^3 patches, batch {batch}; volume {shape}, blocks {block}: {batches} forward "
          f"batches ({tiles} tiles) per pipeline run; one whole-volume tiling would need {single} tiles")
    print("model-only tiles/s: " + ", ".join(f"{v:.3f}" for v in bare))
    print("pipeline useful tiles/s: " + ", ".join(f"{v:.3f}" for v in pipeline))
    print("ratio per round:    " + ", ".join(f"{v:.3f}" for v in ratios))
    print("share of pipeline wall time spent in forward: " + ", ".join(f"{v:.3f}" for v in busy))
    print(f"ratio pipeline / model-only (median): {float(np.median(ratios)):.3f}")


def trivial(tmp: Path, patch: int, batch: int, shape, rounds: int, outputs=(("float32", "zstd"),)) -> None:
    """A 1x1 convolution: ``bioloop predict``'s pipeline vs the plain forward over the very tiles it computes.

    The pipeline (read, normalise, tile, forward, sigmoid, blend, write) runs once per round and per
    output setting (``output_dtype``, ``output_compressor``), the settings alternating within a round;
    the forward of its model is timed on every call, the batches recorded, and the plain forward
    then replays exactly those batch shapes from memory right after each run. Ratio = plain forward
    s / pipeline s; with several settings also each one's pipeline time over the first one's, per round.
    """
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, 1).eval()
    cfg, extras = _settings((patch,) * 3, batch)
    path = _volume(tmp / "raw.zarr" / "trivial", shape)
    shapes, forward = [], model.forward

    def recorded(t):
        shapes.append(tuple(t.shape))
        return forward(t)

    pipeline = {o: [] for o in outputs}
    plain = {o: [] for o in outputs}
    written = {}
    for _ in range(rounds):
        for o in outputs:
            cfg.output_dtype, cfg.output_compressor = o
            shapes.clear()
            model.forward = recorded
            start = time.perf_counter()
            out = P.predict_volume(cfg, model, extras=extras, input=path, output=str(tmp / "trivial.zarr"),
                                   overwrite=True, show_progress=False)
            pipeline[o].append(time.perf_counter() - start)
            written[o] = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
            model.forward = forward
            inputs = {s: torch.rand(s) for s in set(shapes)}
            with torch.inference_mode():
                start = time.perf_counter()
                for s in shapes:
                    model(inputs[s])
                plain[o].append(time.perf_counter() - start)
    tiles = sum(s[0] for s in shapes)
    print(f"1x1 conv, {patch}^3 tiles, batch {batch}, volume {shape}: {len(shapes)} forward batches, {tiles} tiles")
    for o in outputs:
        ratios = [b / a for a, b in zip(pipeline[o], plain[o])]
        print(f"output_dtype={o[0]}, output_compressor={o[1]} ({written[o] / 2**20:.1f} MiB written)")
        print("  pipeline tiles/s:      " + ", ".join(f"{tiles / v:.0f}" for v in pipeline[o]))
        print("  plain forward tiles/s: " + ", ".join(f"{tiles / v:.0f}" for v in plain[o]))
        print("  ratio per round:       " + ", ".join(f"{v:.3f}" for v in ratios))
        print(f"  ratio pipeline / plain forward (median): {float(np.median(ratios)):.3f}")
        if o != outputs[0]:
            speed = [a / b for a, b in zip(pipeline[outputs[0]], pipeline[o])]
            print(f"  pipeline speed-up over {outputs[0][0]}/{outputs[0][1]} per round: "
                  + ", ".join(f"{v:.2f}" for v in speed) + f" (median {float(np.median(speed)):.2f})")


def memory(tmp: Path, shapes, block) -> None:
    for shape in shapes:
        path = _volume(tmp / "raw.zarr" / f"mem{shape[0]}", shape)
        out = tmp / f"mem{shape[0]}.zarr"
        # a fixed mmap threshold stops glibc's adaptive one from letting the heap creep up with the
        # number of blocks (allocator fragmentation that is not held memory)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        child = subprocess.run([sys.executable, __file__, "--memory-child", path, str(out), json.dumps(block)],
                               capture_output=True, text=True, check=True, env=env)
        r = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"memory: volume {shape} ({np.prod(shape) * 4 * 2 / 2**20:.0f} MiB of float32 output): "
              f"peak RSS growth {r['rss_mb']:.0f} MiB, tracemalloc peak {r['traced_mb']:.0f} MiB, {r['seconds']:.1f} s")


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(path: str, out: str, block) -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, 3, padding=1).eval()  # cheap: this part measures memory, not speed
    cfg, extras = _settings((64, 64, 64), 4)
    with torch.inference_mode():
        model(torch.rand(4, 1, 64, 64, 64))
    overlap = 0.0  # every block then reads the same input box, on both volumes
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    before = _rss_mb("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    P.predict_volume(cfg, model, extras=extras, input=path, output=out, block_shape=tuple(block),
                     overlap=overlap, show_progress=False)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"rss_mb": _rss_mb("VmHWM") - before, "traced_mb": traced / 2**20, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="batches per model-only run")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline runs (model-only runs around each)")
    parser.add_argument("--mode", choices=["all", "trivial"], default="all",
                        help="'trivial': only the 1x1-convolution pipeline vs plain forward")
    parser.add_argument("--outputs", nargs="+", default=["float32/zstd"], metavar="DTYPE/COMPRESSOR",
                        help="trivial mode: output_dtype/output_compressor settings to alternate, "
                             "e.g. float32/zstd uint8/lz4")
    parser.add_argument("--memory-child", nargs=3, metavar=("INPUT", "OUTPUT", "BLOCK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], json.loads(args.memory_child[2]))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        trivial(tmp, 48, 8, shape=(96, 192, 192), rounds=args.rounds,
                outputs=tuple(tuple(o.split("/")) for o in args.outputs))
        if args.mode == "trivial":
            return
        throughput(tmp, args.patch, args.batch, shape=(48, 96, 96), block=None, repeats=args.repeats,
                   rounds=args.rounds)
        memory(tmp, shapes=[(192, 192, 192), (384, 384, 384)], block=(64, 64, 64))


if __name__ == "__main__":
    main()
