"""The training loop on a tiny regression task: accumulation, clipping, validation limits,
best checkpoints, early stopping, non-finite losses, precision, logging, fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch

from bioloop import api
from bioloop.engine.checkpoint import load_checkpoint
from bioloop.errors import CheckpointError, TrainingError

BASE = """
task = "toy"
epochs = {epochs}
iterations_per_epoch = {ipe}
batch_size = {bs}
learning_rate = 0.05
optimizer = {{"type": "SGD", "params": {{}}}}
load_model = None
model_name = "toy"
"""


def _cfg(write_config, extra="", epochs=2, ipe=4, bs=4, name="cfg.py"):
    return write_config(BASE.format(epochs=epochs, ipe=ipe, bs=bs) + extra, name)


def _final_weights(result):
    state = load_checkpoint(sorted((p for p in __import__("pathlib").Path(result["checkpoint_dir"]).glob("*_[0-9]*.pth")),
                                   key=lambda p: int(p.stem.rsplit("_", 1)[1]))[-1])
    return state["model"]


def test_accumulation_matches_a_larger_batch(toy_task, write_config, tmp_path):
    big = api.train(_cfg(write_config, "logs_save_path='a/logs'\nmodel_save_path='a/ck/{model_name}_{epoch}.pth'\n",
                         epochs=1, ipe=2, bs=4), quiet=True)
    small = api.train(_cfg(write_config, "gradient_accumulation_steps=2\nlogs_save_path='b/logs'\n"
                           "model_save_path='b/ck/{model_name}_{epoch}.pth'\n", epochs=1, ipe=4, bs=2, name="c2.py"),
                      quiet=True)
    assert big["optimizer_steps"] == 2 and small["optimizer_steps"] == 2
    assert small["iterations"] == 4
    for key, value in _final_weights(big).items():
        assert torch.allclose(value, _final_weights(small)[key], atol=1e-6), key


def test_clipping_happens_once_per_optimizer_step(toy_task, write_config, monkeypatch):
    calls = []
    original = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(1) or original(*a, **k))
    result = api.train(_cfg(write_config, "gradient_accumulation_steps=3\nmax_grad_norm=0.5\n", epochs=1, ipe=6),
                       quiet=True)
    assert result["optimizer_steps"] == 2
    assert len(calls) == 2


def test_validation_batch_limit(toy_task, write_config):
    api.train(_cfg(write_config, "validation_batch_limit=2\nvalidation_batch_size=2\n", epochs=1), quiet=True)
    assert toy_task.calls["val"] == 2


def test_validation_time_limit(toy_task, write_config, monkeypatch):
    import bioloop.engine.progress as progress

    ticks = iter(range(0, 1000, 10))  # every clock read advances 10 s
    original = progress.ValidationBar.__init__

    def init(self, *args, **kwargs):
        kwargs["clock"] = lambda: float(next(ticks))
        original(self, *args, **kwargs)

    monkeypatch.setattr(progress.ValidationBar, "__init__", init)
    api.train(_cfg(write_config, "validation_time_limit=25\nvalidation_batch_size=1\n", epochs=1), quiet=True)
    assert 1 <= toy_task.calls["val"] < 16


def test_best_and_monitor_checkpoints(toy_task, write_config, tmp_path):
    result = api.train(_cfg(write_config, "monitor=['score']\n", epochs=3), quiet=True)
    manifest = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())
    assert set(manifest["best"]) == {"mse", "score"}
    assert (tmp_path / "checkpoints" / "toy_best.pth").is_file()
    assert (tmp_path / "checkpoints" / "toy_best_score.pth").is_file()
    assert result["best"]["mse"]["value"] == pytest.approx(-result["best"]["score"]["value"])


def test_unknown_key_metric_is_reported(toy_task, write_config):
    from bioloop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"key_metric.*'mse_val'.*did you mean 'mse'"):
        api.train(_cfg(write_config, "key_metric='mse_val'\n", epochs=1), quiet=True)


def test_early_stopping_respects_patience_and_min_epochs(toy_task, write_config):
    # a learning rate of ~0 never improves beyond min_delta
    text = "learning_rate=1e-12\nearly_stopping={'patience': 2, 'min_delta': 1.0, 'min_epochs': 4}\n"
    result = api.train(_cfg(write_config, text, epochs=10), quiet=True)
    assert result["epochs_completed"] == 4


def test_nonfinite_loss_stops_before_saving(toy_task, write_config, tmp_path):
    with pytest.raises(TrainingError, match="non-finite loss at epoch 2"):
        api.train(_cfg(write_config, "nan_at_iteration=6\n", epochs=3), quiet=True)
    files = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pth"))
    assert "model_2.pth" not in " ".join(files)
    state = load_checkpoint(tmp_path / "checkpoints" / [f for f in files if f.endswith("_1.pth")][0])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nonfinite_loss_can_be_skipped(toy_task, write_config):
    result = api.train(_cfg(write_config, "nan_at_iteration=2\non_nonfinite_loss='skip'\n", epochs=1), quiet=True)
    assert result["epochs_completed"] == 1


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_reduced_precision_on_cpu(toy_task, write_config, precision):
    result = api.train(_cfg(write_config, f"precision='{precision}'\n", epochs=1), quiet=True)
    assert result["optimizer_steps"] == 4


def test_step_scheduler_and_lr_log(toy_task, write_config, tmp_path):
    text = "scheduler={'type': 'StepLR', 'params': {'step_size': 1, 'gamma': 0.5}}\nscheduler_interval='step'\n"
    api.train(_cfg(write_config, text, epochs=1, ipe=3), quiet=True)
    state = load_checkpoint(tmp_path / "checkpoints" / "toy_1.pth")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.5**3)


def test_logs_and_run_records(toy_task, write_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = _cfg(write_config, "logger={'log_every_n_steps': 1}\n", epochs=2)
    result = api.train(path, quiet=True)
    run = tmp_path / "tensorboard" / "toy"
    assert result["run_dir"] == str(run)
    assert (run / "cfg.py").read_bytes() == path.read_bytes()
    assert "learning_rate: 0.05" in (run / "resolved_config.yaml").read_text()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["config_sha256"]
    events = EventAccumulator(str(run)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_s", "train/data_wait_fraction", "val/mse"} <= tags
    csv = (run / "metrics.csv").read_text().splitlines()
    assert csv[0] == "time,epoch,step,tag,value" and any(",val/mse," in line for line in csv)


def test_model_to_load_starts_from_other_weights(toy_task, write_config, tmp_path):
    model = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Linear(4, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
        model[1].bias.zero_()
    torch.save(model.state_dict(), tmp_path / "pre.pth")
    result = api.train(_cfg(write_config, "model_to_load='pre.pth'\nlearning_rate=1e-9\n", epochs=1), quiet=True)
    assert result["last_metrics"]["mse"] < 1e-8


def test_model_to_load_with_wrong_shapes_fails_loudly(toy_task, write_config, tmp_path):
    torch.save(torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(3, 1)).state_dict(), tmp_path / "pre.pth")
    with pytest.raises(CheckpointError, match=r"pre\.pth.*shape"):
        api.train(_cfg(write_config, "model_to_load='pre.pth'\n", epochs=1), quiet=True)


def test_resume_from_corrupt_checkpoint_never_restarts(toy_task, write_config, tmp_path):
    path = _cfg(write_config, "load_model='latest'\n", epochs=2)
    api.train(path, quiet=True)
    latest = tmp_path / "checkpoints" / "toy_2.pth"
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="toy_2.pth"):
        api.train(path, ["epochs=3"], quiet=True)


def test_resume_continues_epochs_and_keeps_edited_schedule(toy_task, write_config, tmp_path):
    text = "load_model='latest'\nscheduler={'type': 'StepLR', 'params': {'step_size': 1, 'gamma': 0.5}}\n"
    path = _cfg(write_config, text, epochs=2)
    api.train(path, quiet=True)
    result = api.train(path, ["epochs=4", "load_scheduler_state_dict=False",
                              "scheduler={'type': 'StepLR', 'params': {'step_size': 1, 'gamma': 1.0}}"], quiet=True)
    assert result["epochs_completed"] == 4
    state = load_checkpoint(tmp_path / "checkpoints" / "toy_4.pth")
    # the edited schedule (gamma 1) started from the restored optimizer lr 0.05 * 0.5**2
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.25)


def test_resume_in_process_equals_uninterrupted(toy_task, write_config, tmp_path):
    extra = "load_model='latest'\ndropout=0.3\nnoise=0.1\nscheduler={'type': 'StepLR', 'params': {'step_size': 1}}\n"
    full = api.train(_cfg(write_config, extra + "logs_save_path='full/l'\nmodel_save_path='full/{model_name}_{epoch}.pth'\n",
                          epochs=4, name="full.py"), quiet=True)
    part = _cfg(write_config, extra + "logs_save_path='part/l'\nmodel_save_path='part/{model_name}_{epoch}.pth'\n",
                epochs=4, name="part.py")
    api.train(part, ["epochs=2"], quiet=True)
    resumed = api.train(part, quiet=True)
    assert resumed["epochs_completed"] == 4
    a, b = _final_weights(full), _final_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_snapshot_cadence_and_pruning(toy_task, write_config, tmp_path):
    api.train(_cfg(write_config, "save_every_n_epochs=2\nmax_snapshots=2\n", epochs=7, ipe=1), quiet=True)
    epochs = sorted(int(p.stem.rsplit("_", 1)[1]) for p in (tmp_path / "checkpoints").glob("toy_[0-9]*.pth"))
    assert epochs == [6, 7]  # saved at 2, 4, 6 and the last epoch; only the newest two kept
    manifest = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())
    assert (tmp_path / "checkpoints" / manifest["best"]["mse"]["file"]).is_file()


def test_checkpoint_holds_the_full_state(toy_task, write_config, tmp_path):
    api.train(_cfg(write_config, "", epochs=1), quiet=True)
    state = load_checkpoint(tmp_path / "checkpoints" / "toy_1.pth")
    for key in ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "rng", "sampler", "selection", "config",
                "task", "bioloop_version", "extras"):
        assert key in state, key
    assert state["epoch"] == 1 and state["step"] == 4 and state["config"]["learning_rate"] == 0.05
    assert set(state["rng"]) >= {"python", "numpy", "torch"}


def test_task_parameter_groups_and_pre_step_hook(toy_task, write_config, monkeypatch):
    """A task may give the optimizer its own groups and freeze part of the model before each step."""
    seen = []

    def groups(model, cfg):
        return [{"params": [model[1].weight]}, {"params": [model[1].bias], "lr": 0.0}]

    def before_step(model, epoch, cfg):
        seen.append(epoch)
        model[1].weight.grad = None  # frozen for this step: the optimizer skips it

    monkeypatch.setattr(toy_task, "parameter_groups", groups, raising=False)
    monkeypatch.setattr(toy_task, "before_optimizer_step", before_step, raising=False)
    result = api.train(_cfg(write_config, epochs=2, ipe=3), quiet=True)
    assert seen == [0, 0, 0, 1, 1, 1] and result["optimizer_steps"] == 6
    state = _final_weights(result)
    torch.manual_seed(42)  # the seed the engine uses; the weight never moved, the bias had lr 0
    fresh = toy_task.build_model(api.load_config(_cfg(write_config, epochs=2, ipe=3, name="again.py")))
    assert torch.equal(state["1.weight"], fresh[1].weight.detach())
    assert torch.equal(state["1.bias"], fresh[1].bias.detach())


def test_save_optimizer_state_false_drops_the_moments_and_resume_says_so(toy_task, write_config, tmp_path, capsys):
    adam = "optimizer={'type': 'Adam', 'params': {}}\nscheduler={'type': 'StepLR', 'params': {'step_size': 1, 'gamma': 0.5}}\n"
    full = _cfg(write_config, adam + "model_save_path='full/{model_name}_{epoch}.pth'\n", epochs=1, name="full.py")
    api.train(full, quiet=True)
    lean = _cfg(write_config, adam + "load_model='latest'\nsave_optimizer_state=False\n", epochs=1, name="lean.py")
    api.train(lean, quiet=True)
    kept, dropped = load_checkpoint(tmp_path / "full" / "toy_1.pth"), load_checkpoint(tmp_path / "checkpoints" / "toy_1.pth")
    assert kept["optimizer"]["state"] and kept["optimizer_state_saved"] is True
    assert dropped["optimizer"]["state"] == {} and dropped["optimizer_state_saved"] is False
    assert dropped["optimizer"]["param_groups"] == kept["optimizer"]["param_groups"]  # lr etc. stay
    assert dropped["scheduler"] == kept["scheduler"]
    capsys.readouterr()
    result = api.train(lean, ["epochs=2"], quiet=False)
    assert result["epochs_completed"] == 2
    assert "saved with save_optimizer_state = False: the optimizer's per-parameter state (e.g. Adam moments) " \
           "restarts from zero" in capsys.readouterr().err
    resumed = load_checkpoint(tmp_path / "checkpoints" / "toy_2.pth")
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.25)  # the schedule went on


def test_best_weights_export_is_weights_only(toy_task, write_config, tmp_path):
    path = _cfg(write_config, "save_best_weights=True\n", epochs=2)
    api.train(path, quiet=True)
    folder = tmp_path / "checkpoints"
    export = torch.load(folder / "toy_best_weights.pth", weights_only=True)
    best = load_checkpoint(folder / "toy_best.pth")
    assert set(export) == {"model", "epoch", "step", "metrics", "config", "task", "model_name", "extras",
                           "bioloop_version"}
    assert export["epoch"] == best["epoch"] and all(torch.equal(export["model"][k], best["model"][k])
                                                    for k in best["model"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert all(s["file"] != "toy_best_weights.pth" for s in manifest["snapshots"])
    # fine-tuning starts from it; resuming from it is refused with the way out
    result = api.train(_cfg(write_config, "model_to_load='checkpoints/toy_best_weights.pth'\nlearning_rate=1e-9\n"
                            "model_save_path='ft/{model_name}_{epoch}.pth'\n", epochs=1, name="ft.py"), quiet=True)
    assert result["epochs_completed"] == 1
    with pytest.raises(CheckpointError, match=r"toy_best_weights.pth: not a resumable bioloop checkpoint.*model_to_load"):
        api.train(path, ["load_model=checkpoints/toy_best_weights.pth", "epochs=3"], quiet=True)
