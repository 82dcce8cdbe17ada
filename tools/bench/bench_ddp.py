"""Data-parallel scaling: training and prediction with N processes vs one, measured in one run.

    .venv/bin/python tools/bench/bench_ddp.py                       # 1 vs 2 processes
    .venv/bin/python tools/bench/bench_ddp.py --devices 4 --3d      # on a machine with 4 GPUs

Training: the same config with `--devices 1` and `--devices N` (torchrun, DDP; `batch_size` per
process), global samples/s of the second epoch from each run's metrics.csv; the scaling
efficiency is (samples/s with N) / (N x samples/s with 1). Prediction: wall time of
`bioloop predict` over the same volume with 1 and N processes; the speed-up is t1 / tN.
On GPUs each process takes cuda:<LOCAL_RANK>; on CPUs the processes share the cores (gloo).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "BIOLOOP_PROGRESS": "0", "PYTHONPATH": str(ROOT)}


def _bioloop(*args) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bioloop", *map(str, args)], env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bioloop {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def _samples_per_s(run_dir: Path, epoch: int) -> float:
    with open(run_dir / "metrics.csv") as f:
        rows = [float(r["value"]) for r in csv.DictReader(f)
                if r["tag"] == "train/samples_per_s" and int(r["epoch"]) == epoch]
    return sum(rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30, help="iterations per epoch (2 epochs)")
    parser.add_argument("--3d", dest="three_d", action="store_true", help="3d_unet on (16, 64, 64) patches")
    args = parser.parse_args()
    from bioloop.data.synthetic import make_em_dataset

    folder = Path(tempfile.mkdtemp(prefix="bench_ddp_"))
    data = make_em_dataset(folder / "em", shape=(32, 256, 256))
    patch, model = ((16, 64, 64), "3d_unet") if args.three_d else ((1, 128, 128), "2d_unet")
    results = {}
    for n in (1, args.devices):
        cfg = folder / f"n{n}.py"
        cfg.write_text("\n".join([
            f"datasplit_path = {data.datasplit_path!r}", 'classes = ["nuc", "mito"]',
            f"input_array_info = {{'shape': {patch}, 'scale': (8, 8, 8)}}", f"model_name = {model!r}",
            "batch_size = 4", "epochs = 2", f"iterations_per_epoch = {args.iterations}",
            f"logger = {{'log_every_n_steps': {args.iterations}}}", "validation_batch_limit = 2",
            "num_workers = 2", "load_model = None", f"logs_save_path = 'logs{n}'",
            f"model_save_path = 'ck{n}/{{model_name}}_{{epoch}}.pth'", ""]))
        _bioloop("train", cfg, "--devices", n, "-q")
        rate = _samples_per_s(folder / f"logs{n}", epoch=2)
        seconds = _bioloop("predict", cfg, "--input", data.raw_path, "--output", folder / f"pred{n}.zarr",
                           "--devices", n, "-q")
        results[n] = (rate, seconds)
        print(f"{n} process(es): training {rate:.2f} samples/s, prediction {seconds:.1f} s", flush=True)
    (r1, t1), (rn, tn) = results[1], results[args.devices]
    print(f"training scaling efficiency with {args.devices}: {rn / (args.devices * r1):.3f} "
          f"(samples/s ratio {rn / r1:.2f}); prediction speed-up: {t1 / tn:.2f}")


if __name__ == "__main__":
    main()
