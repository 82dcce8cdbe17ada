"""Seeding and capturing/restoring every random number generator a run uses.

The captured state holds only plain types and tensors, so it survives
``torch.save`` + ``torch.load(weights_only=True)`` inside a checkpoint.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

_MAX_SEED = 2**32 - 1


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed python ``random``, numpy's global generator and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks torch for deterministic algorithms (warning, not
    failing, where none exists), turns off cuDNN autotuning and sets
    ``CUBLAS_WORKSPACE_CONFIG``. With ``False`` those global switches are left as they are.
    Returns the seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int (got {seed!r})")
    if not 0 <= int(seed) <= _MAX_SEED:
        raise ValueError(f"seed must be between 0 and {_MAX_SEED} (got {seed!r})")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily when not initialised)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def capture_rng_state() -> dict[str, Any]:
    """Return the state of python, numpy, torch CPU and (when in use) CUDA generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": _python_state_to_plain(random.getstate()),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back generator states from :func:`capture_rng_state` (also after a save/load).

    CUDA states are restored for as many devices as both the state and this machine
    have; they are skipped when CUDA is not available here.
    """
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise KeyError(f"RNG state lacks {missing} (got keys {sorted(state)})")
    random.setstate(_python_state_from_plain(state["python"]))
    np_state = state["numpy"]
    keys = np_state["keys"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state(
        (
            np_state["kind"],
            keys.astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    torch.set_rng_state(_as_byte_tensor(state["torch"]))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        count = min(len(cuda_states), torch.cuda.device_count())
        for device in range(count):
            torch.cuda.set_rng_state(_as_byte_tensor(cuda_states[device]), device)


def _python_state_to_plain(py_state: tuple) -> tuple:
    version, internal, gauss_next = py_state
    return (int(version), tuple(int(x) for x in internal), gauss_next)


def _python_state_from_plain(plain) -> tuple:
    version, internal, gauss_next = plain
    return (int(version), tuple(int(x) for x in internal), gauss_next)


def _as_byte_tensor(value) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return tensor.detach().to(device="cpu", dtype=torch.uint8)
