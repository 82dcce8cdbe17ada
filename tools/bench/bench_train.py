"""Training pipeline efficiency: end-to-end training throughput vs model-only throughput.

    .venv/bin/python tools/bench/bench_train.py            # 2D and 3D, about 8 minutes on 2 CPU cores

End-to-end: `bioloop train` (the engine, the zarr dataset, sampling, augmentation, the
DataLoader with default settings) on synthetic OME-NGFF data; samples/s are read from the
run's metrics.csv for the last epoch. Model-only: the same model, loss and optimizer stepping
over batches already in memory. Both are measured in this one run; the ratio is printed.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BIOLOOP_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CASES = {
    "2d": {"input_array_info": {"shape": (1, 128, 128), "scale": (8, 8, 8)}, "model_name": "2d_unet"},
    "3d": {"input_array_info": {"shape": (16, 64, 64), "scale": (8, 8, 8)}, "model_name": "3d_unet"},
}


def _config(folder: Path, datasplit: str, case: dict, iterations: int) -> Path:
    text = "\n".join([
        f"datasplit_path = {datasplit!r}",
        'classes = ["nuc", "mito"]',
        f"input_array_info = {case['input_array_info']!r}",
        f"model_name = {case['model_name']!r}",
        "epochs = 2",
        f"iterations_per_epoch = {iterations}",
        f"logger = {{'log_every_n_steps': {iterations}}}",
        "load_model = None",
        f"model_save_path = 'runs_{case['model_name']}/checkpoints/{{model_name}}_{{epoch}}.pth'",
        f"logs_save_path = 'runs_{case['model_name']}/logs'",
    ])
    path = folder / f"bench_{case['model_name']}.py"
    path.write_text(text + "\n")
    return path


def _train_only_split(data, folder: Path) -> str:
    from bioloop.data.datasplit import read_datasplit, write_datasplit

    entries = [e for e in read_datasplit(data.datasplit_path) if e.usage == "train"]
    path = folder / "train_only.csv"
    write_datasplit(path, entries)
    return str(path)


def end_to_end(config: Path) -> float:
    from bioloop import api

    result = api.train(str(config), quiet=True)
    rows = list(csv.DictReader(open(Path(result["run_dir"]) / "metrics.csv")))
    values = [float(r["value"]) for r in rows if r["tag"] == "train/samples_per_s"]
    return values[-1]


def model_only(config: Path, iterations: int) -> float:
    import numpy as np
    import torch

    from bioloop import api
    from bioloop.engine.optim import build_optimizer
    from bioloop.tasks import get_task

    cfg = api.load_config(str(config))
    task = get_task(cfg.task)
    model = task.build_model(cfg)
    loss_fn = task.build_loss(cfg)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), learning_rate=cfg.learning_rate, where="bench")
    train, _ = task.build_datasets(cfg)
    batches = []
    for b in range(4):
        items = [train[(i % len(train), 1000 * b + i)] for i in range(cfg.batch_size)]
        batches.append({k: torch.stack([it[k] for it in items]) for k in items[0]})
    model.train()

    def step(batch):
        out = task.training_step(model, batch, loss_fn, cfg)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches[:2]:
        step(batch)  # warm-up
    start = time.perf_counter()
    for i in range(iterations):
        step(batches[i % len(batches)])
    return iterations * cfg.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--iterations", type=int, default=8)
    args = parser.parse_args()
    from bioloop.data.synthetic import make_em_dataset

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_em_dataset(folder / "data", shape=(48, 256, 384))
        datasplit = _train_only_split(data, folder)
        for name in args.cases:
            config = _config(folder, datasplit, CASES[name], args.iterations)
            # model-only before and after, so a drifting machine load shows up rather than skewing the ratio
            before = model_only(config, args.iterations)
            e2e = end_to_end(config)
            after = model_only(config, args.iterations)
            ref = (before + after) / 2
            print(f"{name}: end-to-end {e2e:.2f} samples/s, model-only {ref:.2f} samples/s "
                  f"(before {before:.2f}, after {after:.2f}), ratio {e2e / ref:.3f}", flush=True)


if __name__ == "__main__":
    main()
