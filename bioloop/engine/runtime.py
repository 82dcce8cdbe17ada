"""Devices, precision and torch.distributed set-up for one training or prediction process."""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bioloop.errors import ConfigError


@dataclass
class Runtime:
    """What this process runs on: its device, its rank among how many, its precision."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    precision: str = "32"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        """Where this process runs: rank, node (torchrun's GROUP_RANK), local rank, host, device."""
        import socket

        return {"rank": self.rank, "node_rank": int(os.environ.get("GROUP_RANK", "0")), "local_rank": self.local_rank,
                "host": socket.gethostname(), "device": str(self.device)}

    @property
    def amp_dtype(self):
        return {"bf16": torch.bfloat16, "16": torch.float16}.get(self.precision)

    def autocast(self):
        """The autocast context for forward passes (a no-op at full precision)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self):
        """A GradScaler for float16 training; disabled otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")


def resolve_device(name: str | None, *, where: str = "device", local_rank: int = 0) -> torch.device:
    """'auto'/None picks cuda, then mps, then cpu; explicit names are checked."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError.at(where, "not a device name", got=name, fix="use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError.at(where, "CUDA was requested but no CUDA device is available", got=name, fix="set device = 'auto' or 'cpu'")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise ConfigError.at(where, f"only {torch.cuda.device_count()} CUDA device(s) exist", got=name)
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError.at(where, "MPS was requested but is not available", got=name, fix="set device = 'auto' or 'cpu'")
    return device


def check_precision(precision: str, device: torch.device, *, where: str = "precision") -> None:
    """Reject precision/device pairs that cannot work, before any step runs."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError.at(where, "this GPU does not support bfloat16", got=precision, fix="use '16' or '32'")


def init_runtime(device_name: str | None, precision: str, *, where: str = "") -> Runtime:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1) and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    prefix = f"{where}: " if where else ""
    device = resolve_device(device_name, where=f"{prefix}device", local_rank=local_rank)
    check_precision(precision, device, where=f"{prefix}precision")
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=process_group_backend(device), timeout=datetime.timedelta(minutes=30))
    return Runtime(device=device, rank=rank, local_rank=local_rank, world_size=world, precision=precision)


def process_group_backend(device: torch.device) -> str:
    """The backend string for ``init_process_group``: NCCL for CUDA tensors and gloo for CPU ones.

    An NCCL-only group cannot reduce CPU tensors ("No backend type associated with device type
    cpu"); ``all_gather_object`` and friends and any CPU flag need gloo beside it.
    """
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(runtime: Runtime, obj):
    """Every rank's ``obj`` in rank order (just ``[obj]`` without distribution)."""
    if not runtime.distributed:
        return [obj]
    out = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(runtime: Runtime, obj):
    """Rank 0's ``obj`` on every rank."""
    if not runtime.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def to_device(batch, device: torch.device):
    """Move every tensor inside nested dicts/lists/tuples to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
