"""A training process for the torch.distributed tests (started by torch.multiprocessing.spawn).

It joins a gloo group the way torchrun would (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* in the
environment), registers the toy task, trains a config and writes what it saw to
``<out>/rank<r>.json``: the run's result and every torch.distributed collective the engine
called, with the device of its tensor and the device types the group's backend serves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _shim(log: list):
    import torch
    import torch.distributed as dist

    def served() -> set[str]:  # "cpu:gloo,cuda:nccl" -> {"cpu", "cuda"}
        return {part.split(":")[0] for part in dist.get_backend_config().split(",")}

    def wrap(name, tensor_arg):
        original = getattr(dist, name)

        def collective(*args, **kwargs):
            entry = {"name": name}
            if tensor_arg is not None:
                tensor = args[tensor_arg] if len(args) > tensor_arg else kwargs["tensor"]
                entry.update(device=str(tensor.device), served=sorted(served()),
                             ok=isinstance(tensor, torch.Tensor) and tensor.device.type in served())
            log.append(entry)
            return original(*args, **kwargs)

        setattr(dist, name, collective)

    for name, tensor_arg in (("all_reduce", 0), ("broadcast", 0), ("all_gather", 1), ("reduce", 0),
                             ("all_gather_object", None), ("broadcast_object_list", None), ("barrier", None)):
        wrap(name, tensor_arg)


def run(rank: int, world: int, port: int, config: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1", BIOLOOP_PROGRESS="0")
    import torch

    torch.set_num_threads(1)
    import bioloop.tasks as tasks
    from bioloop.api import load_config
    from bioloop.engine.trainer import train
    from tests.toy_task import ToyTask

    tasks.TASKS["toy"] = "tests.toy_task:TASK"
    tasks._loaded["toy"] = ToyTask()
    log: list = []
    _shim(log)
    os.chdir(Path(config).parent)
    result = train(load_config(config), quiet=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"result": result, "collectives": log}, default=str))
