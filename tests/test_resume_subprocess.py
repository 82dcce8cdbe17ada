"""Real processes: SIGKILL then resume equals an uninterrupted run; SIGTERM saves and exits; DDP."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bioloop.engine.checkpoint import load_checkpoint

ENV = {**os.environ, "BIOLOOP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def _bioloop(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "bioloop", *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def _wait_for(predicate, proc, timeout=240):
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early:\n{proc.stdout.read()}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def _manifest_epochs(folder: Path) -> list[int]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [s["epoch"] for s in manifest["snapshots"]]


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


EXTRA = "spatial_transforms = {'mirror': {'axes': {'x': 0.5, 'y': 0.5}}, 'transpose': {'axes': ['x', 'y']}}\n"


def test_sigkill_then_resume_equals_uninterrupted(seg_config, tmp_path):
    full = seg_config("full.py", epochs=4, ipe=3, extra=EXTRA + "model_save_path='full/{model_name}_{epoch}.pth'\n"
                      "logs_save_path='full/logs'\n")
    proc = _bioloop("train", full, "-q")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    killed = seg_config("killed.py", epochs=4, ipe=3, extra=EXTRA + "model_save_path='k/{model_name}_{epoch}.pth'\n"
                        "logs_save_path='k/logs'\n")
    proc = _bioloop("train", killed, "-q")
    _wait_for(lambda: 2 in _manifest_epochs(tmp_path / "k"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert max(_manifest_epochs(tmp_path / "k")) < 4

    proc = _bioloop("train", killed)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resuming from" in out
    a, b = _weights(tmp_path / "full" / "2d_unet_4.pth"), _weights(tmp_path / "k" / "2d_unet_4.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_saves_mid_epoch_and_resume_matches(seg_config, tmp_path):
    full = seg_config("full.py", epochs=2, ipe=30, extra="model_save_path='f/{model_name}_{epoch}.pth'\n"
                      "logs_save_path='f/logs'\n")
    proc = _bioloop("train", full, "-q")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    cfg = seg_config("stopped.py", epochs=2, ipe=30, extra="model_save_path='s/{model_name}_{epoch}.pth'\n"
                     "logs_save_path='s/logs'\nlogger = {'log_every_n_steps': 1}\n")
    # started with -s load_model=None (a fresh run): the printed hint must resume, not start over
    proc = _bioloop("train", cfg, "-s", "load_model=None", "-s", "epochs=2")
    csv = tmp_path / "s" / "logs" / "metrics.csv"
    _wait_for(lambda: csv.exists() and csv.read_text().count("train/loss") >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "interrupted by signal 15" in out
    hint = re.search(r"resume with `(bioloop train [^`]+)`", out)
    assert hint, out
    command = shlex.split(hint.group(1))
    assert "load_model=None" not in command and command[-2:] == ["-s", "load_model=latest"]
    assert "epochs=2" in command  # the other overrides are kept
    assert (tmp_path / "s" / "2d_unet_interrupted.pth").is_file()

    proc = _bioloop(*command[1:])  # the printed command, as the user would paste it
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resuming from" in out and "2d_unet_interrupted.pth" in out
    a, b = _weights(tmp_path / "f" / "2d_unet_2.pth"), _weights(tmp_path / "s" / "2d_unet_2.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_ddp_ends_with_identical_weights(seg_config, tmp_path):
    cfg = seg_config("ddp.py", epochs=2, ipe=2)
    proc = _bioloop("train", cfg, "--devices", "2", "-q")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    record = json.loads((tmp_path / "tensorboard" / "2d_unet" / "run.json").read_text())
    assert record["world_size"] == 2
    sums = record["result"]["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert record["result"]["optimizer_steps"] == 4


@pytest.mark.parametrize("in_file, overrides, expected", [
    ("", [], []),  # load_model = 'latest' is the default: the plain command resumes
    ("", ["load_model=None", "epochs=3"], ["-s", "epochs=3", "-s", "load_model=latest"]),
    ("", ["load_model = 'best'"], ["-s", "load_model=latest"]),
    ("load_model = None\n", ["epochs=3"], ["-s", "epochs=3", "-s", "load_model=latest"]),  # the file's None loses
])
def test_resume_command_resumes_whatever_load_model_was(seg_config, in_file, overrides, expected):
    from bioloop.config.loader import load_config
    from bioloop.engine.resume import resume_command

    path = seg_config("hint.py", extra=in_file)
    command = shlex.split(resume_command(load_config(path, overrides)))
    assert command == ["bioloop", "train", str(path.resolve()), *expected]
