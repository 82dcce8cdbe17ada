"""torch.distributed on CPU (gloo, 2 processes): the collectives the engine calls, and the step module DDP wraps."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from bioloop.engine.checkpoint import load_checkpoint

TOY = """
task = "toy"
epochs = 2
iterations_per_epoch = 3
batch_size = {bs}
forwards = {forwards}
learning_rate = 0.05
optimizer = {{"type": "SGD", "params": {{}}}}
load_model = None
model_name = "toy"
num_workers = 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp_path: Path, text: str, world: int = 2) -> list[dict]:
    import torch.multiprocessing as mp

    from tests import ddp_worker

    (tmp_path / "ddp.py").write_text(text)
    mp.start_processes(ddp_worker.run, args=(world, _free_port(), str(tmp_path / "ddp.py"), str(tmp_path)),
                       nprocs=world, start_method="spawn", join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


def _last_weights(folder: Path) -> dict:
    last = max(folder.glob("toy_[0-9]*.pth"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return load_checkpoint(last)["model"]


@pytest.fixture(scope="module")
def two_forward_ddp(tmp_path_factory):
    """Two gloo processes, batch 4 each, a training step that calls the model twice."""
    folder = tmp_path_factory.mktemp("ddp")
    return folder, _spawn(folder, TOY.format(bs=4, forwards=2))


def test_every_collective_tensor_is_on_a_device_the_backend_serves(two_forward_ddp):
    _, ranks = two_forward_ddp
    for rank in ranks:
        tensors = [c for c in rank["collectives"] if "device" in c]
        assert tensors, "the distributed code path issued no tensor collective"
        assert all(c["ok"] and c["device"] == "cpu" for c in tensors), tensors


def test_one_all_reduce_per_iteration_carries_both_flags(two_forward_ddp):
    """The non-finite flag and the stop request travel together: one all-reduce per batch, no other."""
    _, ranks = two_forward_ddp
    for rank in ranks:
        reduces = [c for c in rank["collectives"] if c["name"] == "all_reduce"]
        assert len(reduces) == rank["result"]["iterations"] == 6


def test_several_forwards_under_ddp_equal_one_process_with_the_global_batch(two_forward_ddp, toy_task,
                                                                             write_config, tmp_path):
    """DDP wraps the whole step: two model calls per step train exactly like one process with batch 8."""
    from bioloop import api

    folder, ranks = two_forward_ddp
    assert ranks[0]["result"]["rank_weight_checksums"][0] == ranks[0]["result"]["rank_weight_checksums"][1]
    single = api.train(write_config(TOY.format(bs=8, forwards=1), "single.py"), quiet=True)
    mine, theirs = _last_weights(Path(single["checkpoint_dir"])), _last_weights(Path(ranks[0]["result"]["checkpoint_dir"]))
    assert ranks[0]["result"]["optimizer_steps"] == single["optimizer_steps"] == 6
    assert ranks[0]["result"]["last_metrics"]["mse"] == pytest.approx(single["last_metrics"]["mse"], rel=1e-5)
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], atol=1e-5), (key, mine[key], theirs[key])


def test_process_group_serves_cuda_and_cpu_tensors(monkeypatch):
    """On CUDA the group is 'cpu:gloo,cuda:nccl' (an NCCL-only group cannot reduce the CPU tensors of
    all_gather_object), and each process takes the GPU of its LOCAL_RANK."""
    import torch.distributed as dist

    from bioloop.engine import runtime

    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: seen.setdefault("set", device))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.setdefault("backend", backend))
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("LOCAL_RANK", "2")
    rt = runtime.init_runtime("auto", "32")
    assert seen["backend"] == "cpu:gloo,cuda:nccl"
    assert rt.device == torch.device("cuda", 2) == seen["set"]
    assert (rt.rank, rt.local_rank, rt.world_size, rt.is_main) == (6, 2, 8, False)
    assert runtime.process_group_backend(torch.device("cpu")) == "gloo"


@pytest.mark.slow
def test_tracking_trains_several_clips_per_process_under_ddp(tmp_path):
    """Tracking once refused batch_size > 1 under DDP (one model call per step); the step module lifts that."""
    from bioloop.data.synthetic_tracking import make_tracking_dataset

    data = make_tracking_dataset(tmp_path / "data", n_frames=12, n_objects=2, image_size=(64, 80), layouts=("slp",))
    model = {"d_model": 16, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dropout": 0.0,
             "dropout_attn_head": 0.0, "num_layers_attn_head": 1,
             "encoder_cfg": {"model_name": "test_resnet", "backend": "timm", "in_chans": 3}}
    clips = {"slp_files": [data.slp_path], "crop_size": 16, "padding": 0, "clip_length": 4}
    ranks = _spawn(tmp_path, f"""
task = "tracking"
model = {model!r}
dataset = {{"train_dataset": {clips!r}}}
epochs = 1
batch_size = 2
iterations_per_epoch = 2
num_workers = 0
load_model = None
""")
    result = ranks[0]["result"]
    assert result["optimizer_steps"] == 2 and result["iterations"] == 2
    sums = result["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
