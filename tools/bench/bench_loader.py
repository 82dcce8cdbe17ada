"""The segmentation training data pipeline alone (no model): bioloop vs cellmap-data on the same zarr.

    .venv/bin/python tools/bench/bench_loader.py                         # loader rows, ~5 min on 2 cores
    .venv/bin/python tools/bench/bench_loader.py --mode crops            # RSS / start-up vs number of crops

The script writes a CellMap-style OME-NGFF 0.4 zarr (zarr v2): raw 256x512x512 uint8 at 8 nm,
64^3 chunks, blosc-zstd, and crops of 128x256x256 with one uint8 array per class (nuc, mito), listed
in a csc datasplit CSV. Every measurement runs in a fresh subprocess (start-up, first batch, peak RSS
are per process): bioloop's training DataLoader exactly as the engine builds it
(``bioloop.engine.loader.TrainLoader``) and, when cellmap-data is importable by ``--cellmap-python``
(default: this interpreter, else /work/cellmap-venv/bin/python), cellmap-data's
``CellMapDataSplit`` + ``CellMapDataLoader`` on the same CSV, classes and mirror-x/y augmentation.
The two alternate ``--rounds`` times per row; the ratio of each round, then the median, is printed.

``--mode crops``: bioloop only, 2D patches, 0 workers, 2 / 8 / 32 crops, once with
``cache_bytes`` = ``--bound`` MiB and once with the default bound (a quarter of RAM): peak RSS and
start-up time (datasets built to first batch) per crop count.

``--per-sample``: also time bioloop with the batched patch cutting switched off (the DataLoader then
indexes ``RandomPatches`` sample by sample, as before it had ``__getitems__``), alternating with the
batched runs, and print batched / per-sample samples/s per round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RAW_SHAPE = (256, 512, 512)
CROP_SHAPE = (128, 256, 256)
CHUNKS = (64, 64, 64)
SCALE = (8.0, 8.0, 8.0)
CLASSES = ["nuc", "mito"]
ROWS = {  # name: (patch shape, batch size)
    "2d": ((1, 128, 128), 8),
    "3d": ((64, 64, 64), 2),
}
MIRROR = {"mirror": {"axes": {"x": 0.5, "y": 0.5}}}


# ----------------------------------------------------------------------------- data


def _ngff_array(group, name: str, data, translation) -> None:
    """An OME-NGFF 0.4 multiscale group ``name`` with one level s0 (blosc-zstd, 64^3 chunks)."""
    import numcodecs

    sub = group.require_group(name)
    sub.attrs["multiscales"] = [{
        "version": "0.4", "name": name.split("/")[-1],
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": list(SCALE)}, {"type": "translation", "translation": list(translation)}]}],
    }]
    array = sub.create_array("s0", shape=data.shape, dtype=data.dtype, chunks=CHUNKS,
                             compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
                             fill_value=0)
    array[...] = data


def make_data(folder: Path, n_crops: int) -> Path:
    """The zarr and its datasplit CSV; crops spread over the raw volume (they may overlap)."""
    import numpy as np
    import zarr

    rng = np.random.default_rng(0)
    zpath = folder / "bench.zarr"
    root = zarr.open_group(str(zpath), mode="w", zarr_format=2)
    smooth = rng.integers(0, 256, (16, 32, 32)).astype(np.uint8)
    raw = np.kron(smooth, np.ones((16, 16, 16), np.uint8)) // 2 + rng.integers(0, 128, RAW_SHAPE, dtype=np.uint8)
    _ngff_array(root, "recon-1/em/fibsem-uint8", raw, (0.0, 0.0, 0.0))
    rows = []
    span = [r - c for r, c in zip(RAW_SHAPE, CROP_SHAPE)]
    for i in range(n_crops):
        start = [int(rng.integers(0, s + 1)) // 8 * 8 for s in span]
        for k, name in enumerate(CLASSES):
            blobs = rng.random((8, 16, 16)) < (0.3 if k == 0 else 0.15)
            mask = np.kron(blobs, np.ones((16, 16, 16), bool)).astype(np.uint8)
            _ngff_array(root, f"recon-1/labels/groundtruth/crop{i + 1}/{name}", mask,
                        tuple(s * v for s, v in zip(start, SCALE)))
        rows.append(f'"train","{zpath}","recon-1/em/fibsem-uint8","{zpath}",'
                    f'"recon-1/labels/groundtruth/crop{i + 1}/[{",".join(CLASSES)}]"')
    csv = folder / "datasplit.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


# ----------------------------------------------------------------------------- children


def _rss_mb(pid="self", field="VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pss_mb(pids) -> float:
    """Proportional set size of these processes together (shared pages counted once)."""
    total = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def _children() -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()]
    except OSError:
        return []


def _measure(make_iter, batches: int, batch_size: int, start: float) -> dict:
    it = make_iter()
    next(it)
    first = time.perf_counter() - start
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - t0
    return {"samples_per_s": batches * batch_size / seconds, "first_batch_s": first,
            "peak_rss_mb": _rss_mb(), "pss_mb": _pss_mb([os.getpid(), *_children()])}


def child_bioloop(csv: str, row: str, workers: int, batches: int, cache_mb: float | None,
                  per_sample: bool = False) -> dict:
    sys.path.insert(0, str(ROOT))
    if per_sample:  # the loader falls back to one dataset[key] per sample
        from bioloop.tasks.segmentation.data import RandomPatches

        del RandomPatches.__getitems__
    from bioloop.config.loader import load_config
    from bioloop.engine.loader import TrainLoader
    from bioloop.tasks import get_task
    from bioloop.tasks.segmentation import data, task as _task  # noqa: F401  (imports are not start-up)

    shape, batch = ROWS[row]
    folder = Path(csv).parent
    text = [f"datasplit_path = {csv!r}", f"classes = {CLASSES!r}",
            f"input_array_info = {{'shape': {shape!r}, 'scale': {SCALE!r}}}", f"spatial_transforms = {MIRROR!r}",
            f"batch_size = {batch}", f"num_workers = {workers}", f"iterations_per_epoch = {batches + 1}",
            "normalization = 'dtype'", "model_name = '3d_unet'" if row == "3d" else "model_name = '2d_unet'"]
    if cache_mb is not None:
        text.append(f"cache_bytes = {int(cache_mb * 2**20)}")
    config = folder / f"bench_{row}_{workers}.py"
    config.write_text("\n".join(text) + "\n")
    start = time.perf_counter()
    cfg = load_config(config)
    task = get_task("segmentation")
    train, _ = task.build_datasets(cfg)
    startup = time.perf_counter() - start
    loader = TrainLoader(train, batch_size=batch, num_workers=workers, seed=cfg.random_seed,
                         iterations_per_epoch=cfg.iterations_per_epoch, collate_fn=getattr(task, "collate", None))
    out = _measure(lambda: loader.epoch(0), batches, batch, start)
    return {**out, "startup_s": startup}


def child_cellmap(csv: str, row: str, workers: int, batches: int) -> dict:
    import torch
    from cellmap_data import CellMapDataLoader, CellMapDataSplit
    from cellmap_data.transforms import augment  # noqa: F401  (imports are not start-up)

    shape, batch = ROWS[row]
    arrays = {"shape": list(shape), "scale": list(SCALE)}
    start = time.perf_counter()
    split = CellMapDataSplit(input_arrays={"raw": arrays}, target_arrays={"labels": arrays}, classes=CLASSES,
                             pad=False, csv_path=csv, spatial_transforms=MIRROR, force_has_data=True)
    loader = CellMapDataLoader(split.train_datasets_combined, classes=CLASSES, batch_size=batch,
                               num_workers=workers, is_train=True, rng=torch.Generator().manual_seed(0))
    startup = time.perf_counter() - start
    out = _measure(lambda: iter(loader), batches, batch, start)
    return {**out, "startup_s": startup}


def run_child(python: str, kind: str, csv: Path, row: str, workers: int, batches: int,
              cache_mb: float | None = None) -> dict:
    args = [python, __file__, "--child", kind, str(csv), row, str(workers), str(batches)]
    if cache_mb is not None:
        args += ["--cache-mb", str(cache_mb)]
    env = {**os.environ, "BIOLOOP_PROGRESS": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {row} {workers} workers failed:\n{done.stderr[-3000:]}")
    notes = [line for line in done.stderr.splitlines() if line.startswith("data cache:")]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "notes": notes}


# ----------------------------------------------------------------------------- modes


def _cellmap_python(given: str | None) -> str | None:
    candidates = [given] if given else [sys.executable, "/work/cellmap-venv/bin/python"]
    for python in candidates:
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", "import cellmap_data"], capture_output=True).returncode == 0:
            return python
    return None


def _rates(results) -> str:
    return ", ".join(f"{r['samples_per_s']:.0f}" for r in results)


def loader_mode(args, folder: Path) -> None:
    csv = make_data(folder, 2)
    cellmap = _cellmap_python(args.cellmap_python)
    print(f"data: raw {RAW_SHAPE} uint8, chunks {CHUNKS}, blosc-zstd, 2 crops {CROP_SHAPE}; "
          f"cellmap-data: {cellmap or 'not importable (bioloop rows only)'}")
    print("| patches | bioloop samples/s | cellmap-data samples/s | ratio per round | median ratio "
          "| first batch s (bioloop / cellmap) | peak RSS MiB main (bioloop / cellmap) "
          "| PSS MiB all processes (bioloop / cellmap) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in args.rows.split(","):
        for workers in (0, 2):
            batches = args.batches if row == "2d" else max(5, args.batches // 2)
            ours, theirs, single = [], [], []
            for _ in range(args.rounds):  # alternate: the shared machine's load drifts
                ours.append(run_child(sys.executable, "bioloop", csv, row, workers, batches))
                if args.per_sample:
                    single.append(run_child(sys.executable, "bioloop-per-sample", csv, row, workers, batches))
                if cellmap:
                    theirs.append(run_child(cellmap, "cellmap", csv, row, workers, batches))
            if single:
                speed = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(ours, single)]
                print(f"batched vs per-sample patch cutting, {row} {workers} workers: {_rates(ours)} vs "
                      f"{_rates(single)} samples/s; ratio per round {', '.join(f'{v:.2f}' for v in speed)}, "
                      f"median {statistics.median(speed):.2f}", flush=True)

            def med(results, key):
                return statistics.median(r[key] for r in results) if results else float("nan")

            ratios = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(ours, theirs)]
            shape, batch = ROWS[row]
            print(f"| {row} {shape} batch {batch}, {workers} workers "
                  f"| {_rates(ours)} | {_rates(theirs) or '-'} "
                  f"| {', '.join(f'{v:.2f}' for v in ratios) or '-'} "
                  f"| {statistics.median(ratios) if ratios else float('nan'):.2f} "
                  f"| {med(ours, 'first_batch_s'):.2f} / {med(theirs, 'first_batch_s'):.2f} "
                  f"| {med(ours, 'peak_rss_mb'):.0f} / {med(theirs, 'peak_rss_mb'):.0f} "
                  f"| {med(ours, 'pss_mb'):.0f} / {med(theirs, 'pss_mb'):.0f} |", flush=True)
    print("DataLoader transport alone (zero tensors of the same shapes, no data work), samples/s: " + ", ".join(
        f"{row} {w} workers {transport_ceiling(row, w, args.batches):.0f}" for row in args.rows.split(",")
        for w in (0, 2)))


class _Zeros:
    """A dataset of zero tensors shaped like a row's samples: what DataLoader workers cost by themselves."""

    def __init__(self, shape):
        self.shape = shape

    def __len__(self):
        return 10**6

    def __getitem__(self, key):
        import torch

        spatial = self.shape[1:] if self.shape[0] == 1 else self.shape
        return {"raw": torch.zeros(1, *spatial), "target": torch.zeros(len(CLASSES), *spatial)}


def transport_ceiling(row: str, workers: int, batches: int) -> float:
    """Samples/s of a DataLoader over zero tensors of the row's shapes (no data work at all)."""
    import torch

    shape, batch = ROWS[row]
    loader = torch.utils.data.DataLoader(_Zeros(shape), batch_size=batch, num_workers=workers,
                                         persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def crops_mode(args, folder: Path) -> None:
    print(f"bioloop, 2D patches batch 8, 0 workers, {args.batches} batches after start-up; "
          f"crops of {CROP_SHAPE}; median of {args.rounds}")
    print("| crops | cache_bytes | start-up s (datasets built) | first batch s | peak RSS MiB | note |")
    print("|---|---|---|---|---|---|")
    for n in (2, 8, 32):
        sub = folder / f"crops{n}"
        sub.mkdir()
        csv = make_data(sub, n)
        for bound in (args.bound, None):
            results = [run_child(sys.executable, "bioloop", csv, "2d", 0, args.batches, bound)
                       for _ in range(args.rounds)]
            note = results[0]["notes"][0][:90] + "..." if results[0]["notes"] else "all held whole"
            print(f"| {n} | {f'{bound:.0f} MiB' if bound else 'default (1/4 RAM)'} "
                  f"| {statistics.median(r['startup_s'] for r in results):.2f} "
                  f"| {statistics.median(r['first_batch_s'] for r in results):.2f} "
                  f"| {statistics.median(r['peak_rss_mb'] for r in results):.0f} | {note} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["loader", "crops"], default="loader")
    parser.add_argument("--rows", default="2d,3d")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40, help="batches timed after the first (3D: half)")
    parser.add_argument("--bound", type=float, default=48.0, help="cache_bytes in MiB for --mode crops")
    parser.add_argument("--cellmap-python", default=None)
    parser.add_argument("--per-sample", action="store_true",
                        help="also time bioloop without batched patch cutting, alternating")
    parser.add_argument("--cache-mb", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=5, metavar=("KIND", "CSV", "ROW", "WORKERS", "BATCHES"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, csv, row, workers, batches = args.child
        if kind in ("bioloop", "bioloop-per-sample"):
            result = child_bioloop(csv, row, int(workers), int(batches), args.cache_mb,
                                   per_sample=kind == "bioloop-per-sample")
        else:
            result = child_cellmap(csv, row, int(workers), int(batches))
        print(json.dumps(result))
        return
    print(f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    with tempfile.TemporaryDirectory() as tmp:
        (loader_mode if args.mode == "loader" else crops_mode)(args, Path(tmp))


if __name__ == "__main__":
    main()
