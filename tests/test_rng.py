"""Seeding and RNG capture/restore, including a weights_only save/load round trip."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from bioloop.engine.rng import capture_rng_state, restore_rng_state, seed_everything


def _draw() -> tuple:
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),
        np.random.randn(1).tolist(),  # exercises numpy's cached gaussian
        torch.rand(3).tolist(),
    )


def test_seed_everything_repeats_every_generator():
    seed_everything(123)
    first = _draw()
    seed_everything(123)
    assert _draw() == first
    seed_everything(124)
    assert _draw() != first


def test_restore_after_weights_only_round_trip(tmp_path):
    seed_everything(7)
    _draw()
    np.random.randn(1)  # leave a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = _draw()
    _draw()  # move every generator on
    path = tmp_path / "rng.pth"
    torch.save({"rng": state}, path)
    loaded = torch.load(path, weights_only=True)["rng"]
    restore_rng_state(loaded)
    assert _draw() == expected


def test_captured_state_holds_only_plain_types():
    state = capture_rng_state()
    assert isinstance(state["torch"], torch.Tensor)
    assert isinstance(state["numpy"]["keys"], torch.Tensor)
    assert state["numpy"]["keys"].shape == (624,)
    assert state["cuda"] is None or isinstance(state["cuda"], list)


def test_deterministic_mode_sets_switches(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored after the test
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    before_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        seed_everything(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before_cudnn


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, True])
def test_bad_seed_is_rejected(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        seed_everything(bad)


def test_restore_rejects_incomplete_state():
    with pytest.raises(KeyError, match="numpy"):
        restore_rng_state({"python": random.getstate(), "torch": torch.get_rng_state()})
