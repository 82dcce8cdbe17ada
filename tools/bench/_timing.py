"""Timing helpers shared by the benchmarks (scripts in this folder import it by name)."""

from __future__ import annotations

import time

import torch


def model_only(model, x, repeats: int) -> float:
    """Samples/s of forward passes on a batch already in memory (the ceiling a pipeline is compared with)."""
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return repeats * x.shape[0] / (time.perf_counter() - start)
