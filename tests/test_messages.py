"""Error messages the CLI prints for the engine, checkpoints, optimizers, devices and the command line,
quoted in full: a user sees exactly these lines (exit 2 for config errors, 1 for the others)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from bioloop.cli import cli

TOY = """
task = "toy"
epochs = 1
iterations_per_epoch = 2
batch_size = 4
load_model = None
model_name = "toy"
"""


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _said(result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert message in result.output.replace("\n", " "), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("extra, message", [
    ("device = 'tpu0'\n",
     "cfg.py: device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (got 'tpu0')"),
    ("optimizer = {'type': 'Adamm'}\n",
     "cfg.py: optimizer: unknown optimizer type 'Adamm' (did you mean 'Adam'?)"),
    ("optimizer = lambda params: None\n",
     "cfg.py: optimizer: the optimizer callable did not return a torch.optim.Optimizer (got 'NoneType'); "
     "return e.g. torch.optim.AdamW(params, lr=...)"),
    ("import torch\noptimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)\n",
     "cfg.py: optimizer: the optimizer was built for a different model: none of its parameters belong to the "
     "model being trained; build it from model.parameters() of the config's model, or pass a class or a spec "
     "{'type': 'AdamW', 'params': {...}}"),
    ("scheduler = {'type': 'SequentialLR', 'params': {}}\n",
     "cfg.py: scheduler.params: SequentialLR needs 'schedulers': a non-empty list of scheduler specs (got None); "
     "e.g. {'schedulers': [{'type': 'LinearLR'}, {'type': 'StepLR', ...}]}"),
])
def test_training_set_up_errors(toy_task, write_config, extra, message):
    _said(_run("train", write_config(TOY + extra), "-q"), 2, message)


def test_unavailable_accelerators_are_named(toy_task, write_config):
    if not torch.cuda.is_available():
        _said(_run("train", write_config(TOY + "device = 'cuda'\n"), "-q"), 2,
              "cfg.py: device: CUDA was requested but no CUDA device is available (got 'cuda'); "
              "set device = 'auto' or 'cpu'")
    if not torch.backends.mps.is_available():
        _said(_run("train", write_config(TOY + "device = 'mps'\n", "m.py"), "-q"), 2,
              "m.py: device: MPS was requested but is not available (got 'mps'); set device = 'auto' or 'cpu'")


def test_a_fresh_run_refuses_to_overwrite_an_earlier_one(toy_task, write_config, tmp_path):
    cfg = write_config(TOY + "model_save_path = 'ck/{model_name}_{epoch}.pth'\n")
    assert _run("train", cfg, "-q").exit_code == 0
    _said(_run("train", cfg, "-q"), 1,
          f"cfg.py: load_model: None starts a fresh run, but {tmp_path / 'ck'} holds 1 checkpoint(s) of an earlier "
          "run that it would overwrite (got None); resume with load_model = 'latest', or give this run its own "
          "model_save_path, or delete the old checkpoints")


def test_resuming_from_files_that_are_not_resumable(toy_task, write_config, tmp_path):
    torch.save({"model": {}}, tmp_path / "weights_only.pth")
    _said(_run("train", write_config(TOY + "load_model = 'weights_only.pth'\n"), "-q"), 1,
          f"{tmp_path / 'weights_only.pth'}: not a resumable bioloop checkpoint (no 'epoch'); "
          "use model_to_load to start from these weights instead")
    torch.save({"model": {}, "epoch": 1, "step": 1, "optimizer": {}, "rng": {}, "task": "pose"},
               tmp_path / "pose.pth")
    _said(_run("train", write_config(TOY + "load_model = 'pose.pth'\n", "p.py"), "-q"), 1,
          f"{tmp_path / 'pose.pth'}: checkpoint is for task 'pose', this config trains 'toy'; "
          "point load_model at a checkpoint of this task")
    torch.save({"layer": [1, 2]}, tmp_path / "odd.pth")
    _said(_run("train", write_config(TOY + "load_model = 'odd.pth'\n", "o.py"), "-q"), 1,
          f"{tmp_path / 'odd.pth'}: not a bioloop checkpoint: it has no 'model' state dict (found a dict with keys layer); "
          "pass a file written by bioloop, or give plain weights as model_to_load to start from them")


def test_model_to_load_must_be_a_file_of_weights(toy_task, write_config, tmp_path):
    (tmp_path / "folder.pth").mkdir()
    _said(_run("train", write_config(TOY + "model_to_load = 'folder.pth'\n"), "-q"), 1,
          f"{tmp_path / 'folder.pth'}: checkpoint path is not a file; give the .pth file itself")


def test_an_unreadable_manifest_is_reported_not_ignored(toy_task, write_config, tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "manifest.json").write_text("{not json")
    result = _run("train", write_config(TOY + "model_save_path = 'ck/{model_name}_{epoch}.pth'\n"
                                        "load_model = 'latest'\n"), "-q")
    _said(result, 1, f"{tmp_path / 'ck' / 'manifest.json'}: the checkpoint manifest is unreadable (")


def test_predict_refuses_a_checkpoint_of_another_task(write_config, tmp_path):
    torch.save({"model": {}, "task": "pose"}, tmp_path / "pose.pth")
    cfg = write_config("datasplit_path = 'split.csv'\nclasses = ['nuc']\n")
    _said(_run("predict", cfg, "--input", tmp_path / "raw.zarr", "--output", tmp_path / "o.zarr",
               "--checkpoint", tmp_path / "pose.pth"), 1,
          f"{tmp_path / 'pose.pth'}: checkpoint is for task 'pose', not 'segmentation'")


@pytest.mark.parametrize("args, message", [
    (["-s", "=3"], "command line: override has no key (got '=3')"),
    (["-s", "epochs"], "command line: override must look like key=value (got 'epochs')"),
])
def test_command_line_overrides(toy_task, write_config, args, message):
    _said(_run("train", write_config(TOY), *args, "-q"), 2, message)


def test_unknown_init_template_suggests_the_nearest():
    from bioloop.cli import _templates

    result = _run("init", "segmentation_2", "x.py")
    _said(result, 2, "init: unknown template 'segmentation_2' (did you mean 'segmentation_2d'?)")
    assert ", ".join(_templates()) in result.output.replace("\n", " ")


def test_evaluate_needs_truth_or_crops(write_config, tmp_path):
    cfg = write_config("datasplit_path = 'split.csv'\nclasses = ['nuc']\n")
    _said(_run("evaluate", cfg, "--prediction", tmp_path / "p.zarr"), 2,
          "evaluate: give --truth (a crop group or a label image) or --crops (a datasplit CSV)")


def test_model_to_load_without_weights(toy_task, write_config, tmp_path):
    torch.save({"notes": "hello"}, tmp_path / "notes.pth")
    _said(_run("train", write_config(TOY + "model_to_load = 'notes.pth'\n"), "-q"), 1,
          f"{tmp_path / 'notes.pth'}: holds no model weights: expected a bioloop checkpoint or a dict of tensors "
          "(found a dict with keys notes)")


def test_a_checkpoint_that_cannot_be_written_leaves_nothing_half_written(toy_task, write_config, tmp_path):
    (tmp_path / "ck" / "toy_1.pth").mkdir(parents=True)  # a folder where the epoch checkpoint goes
    result = _run("train", write_config(TOY + "model_save_path = 'ck/{model_name}_{epoch}.pth'\n"), "-q")
    _said(result, 1, f"{tmp_path / 'ck' / 'toy_1.pth'}: could not write the file (IsADirectoryError: ")
    assert "check free disk space and write permission; the previous file is unchanged" in result.output
    assert not [p.name for p in (tmp_path / "ck").iterdir() if p.name.endswith(".tmp")]


def test_resuming_with_an_optimizer_state_that_does_not_fit(toy_task, write_config, tmp_path):
    model = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Linear(4, 1))
    two_groups = {"state": {}, "param_groups": [{"params": [0], "lr": 0.1}, {"params": [1], "lr": 0.1}]}
    torch.save({"model": model.state_dict(), "epoch": 1, "step": 2, "optimizer": two_groups, "rng": {},
                "task": "toy"}, tmp_path / "two.pth")
    result = _run("train", write_config(TOY.replace("epochs = 1", "epochs = 2") + "load_model = 'two.pth'\n"), "-q")
    _said(result, 1, f"{tmp_path / 'two.pth'}: optimizer state does not fit this optimizer (")
    assert ("resume with the optimizer the run was started with, or use model_to_load to start a new run "
            "from these weights") in result.output.replace("\n", " ")
