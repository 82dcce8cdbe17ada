"""Several nodes: two torchrun launches (node_rank 0 and 1, one process each, a static rendezvous on
127.0.0.1) run `bioloop train` and `bioloop predict` as one job, like `srun torchrun --nnodes 2 ...`."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

ENV = {**os.environ, "BIOLOOP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(*bioloop_args) -> list[str]:
    """Start node 0 and node 1 at once and wait for both; returns their outputs."""
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
         "-m", "bioloop", *map(str, bioloop_args)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for node in (0, 1)]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out
        outputs.append(out)
    return outputs


@pytest.mark.slow
def test_two_nodes_train_then_predict_disjoint_blocks(seg_config, em_data, tmp_path):
    from click.testing import CliRunner

    from bioloop.cli import cli
    from bioloop.data.ngff import open_volume

    cfg = seg_config("nodes.py", epochs=1, ipe=2)
    _two_nodes("train", cfg, "-q")
    record = json.loads((tmp_path / "tensorboard" / "2d_unet" / "run.json").read_text())
    # rank and world from the environment; one process per node, each on its node's local rank 0
    assert record["world_size"] == 2
    assert [(p["rank"], p["node_rank"], p["local_rank"], p["device"]) for p in record["processes"]] == \
        [(0, 0, 0, "cpu"), (1, 1, 0, "cpu")]
    sums = record["result"]["rank_weight_checksums"]
    assert sums[0] == sums[1] and record["result"]["optimizer_steps"] == 2
    # only rank 0 writes: one run folder, one event file, each logged scalar once per step
    assert len(list((tmp_path / "tensorboard" / "2d_unet").glob("events.out.tfevents.*"))) == 1
    with open(tmp_path / "tensorboard" / "2d_unet" / "metrics.csv") as f:
        rows = Counter((r["tag"], r["step"]) for r in csv.DictReader(f))
    assert rows and max(rows.values()) == 1

    common = ["predict", cfg, "--input", em_data.raw_path, "--roi", "0:32,0:600,0:600", "--block-shape", "4,32,32",
              "-q"]
    _two_nodes(*common, "--output", tmp_path / "two.zarr")
    one = CliRunner().invoke(cli, [*map(str, common), "--output", str(tmp_path / "one.zarr")])
    assert one.exit_code == 0, one.output
    assert not (tmp_path / "two.zarr" / ".bioloop_blocks").exists()  # removed once every block is written
    for name in ("nuc", "mito"):
        a, b = open_volume(tmp_path / "one.zarr" / name), open_volume(tmp_path / "two.zarr" / name)
        np.testing.assert_allclose(b.read((0, 0, 0), b.spatial_shape), a.read((0, 0, 0), a.spatial_shape), atol=1e-6)
