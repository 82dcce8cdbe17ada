"""Checkpoint files and the manifest: atomic writes, loud failures, pruning, interrupts."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import bioloop.engine.checkpoint as ckpt
from bioloop.engine.checkpoint import (
    CheckpointManager,
    apply_model_state,
    load_checkpoint,
    load_weights,
    save_atomic,
)
from bioloop.engine.rng import capture_rng_state
from bioloop.errors import CheckpointError


def _model(out: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, out))


def _state(model: nn.Module | None = None, epoch: int = 0) -> dict:
    model = model or _model()
    return {"model": model.state_dict(), "epoch": epoch}


def _temp_files(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- save/load


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "run.pth"
    save_atomic({"model": {"w": torch.ones(2)}}, path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="run.pth.*No space left"):
        save_atomic({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert _temp_files(tmp_path) == []


def test_keyboard_interrupt_during_save_cleans_up_and_propagates(tmp_path, monkeypatch):
    def interrupted_save(obj, handle):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"model": {}}, tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []


def test_full_state_round_trips_through_weights_only(tmp_path):
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
        "epoch": 3,
        "step": 30,
        "best": {"metric": "val/iou", "value": 0.5},
        "config": {"learning_rate": 0.01, "model_name": "unet", "scales": [1.0, None]},
        "task": "segmentation",
        "version": "0.1.0",
    }
    path = save_atomic(state, tmp_path / "full.pth")
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["config"] == state["config"]
    fresh = _model(2)
    apply_model_state(fresh, loaded["model"], path=path)
    new_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.01)
    new_optimizer.load_state_dict(loaded["optimizer"])
    assert torch.equal(
        new_optimizer.state_dict()["state"][0]["exp_avg"],
        optimizer.state_dict()["state"][0]["exp_avg"],
    )
    assert loaded["scheduler"]["last_epoch"] == 1


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth: checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_checkpoint_is_reported_as_corrupt(tmp_path, keep):
    path = save_atomic(_state(), tmp_path / "cut.pth")
    data = path.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:size])
    corrupt = r"cut\.pth: checkpoint is corrupt or truncated \("
    with pytest.raises(CheckpointError, match=corrupt) as info:
        load_checkpoint(path)
    assert "use another checkpoint" in str(info.value)
    with pytest.raises(CheckpointError, match=r"cut\.pth: checkpoint is corrupt"):
        load_weights(path)


def test_empty_checkpoint_says_so(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth: .*\(the file is empty\)"):
        load_checkpoint(tmp_path / "empty.pth")


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "live.pth"
    torch.save({"model": {}, "obj": nn.Linear(1, 1)}, path)
    with pytest.raises(
        CheckpointError,
        match=r"live\.pth: checkpoint holds objects other than tensors and plain values "
        r"\(it stores a torch\.nn\.modules\.linear\.Linear object\)",
    ):
        load_checkpoint(path)


def test_raw_state_dict_is_not_a_checkpoint_but_loads_as_weights(tmp_path):
    model = _model()
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(
        CheckpointError, match=r"weights\.pth: not a bioloop checkpoint.*keys 0\.weight"
    ):
        load_checkpoint(path)
    weights = load_weights(path)
    assert set(weights) == set(model.state_dict())
    save_atomic(_state(model), tmp_path / "full.pth")
    assert set(load_weights(tmp_path / "full.pth")) == set(model.state_dict())


def test_load_weights_rejects_other_files(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"epoch": 3, "notes": "hi"}, path)
    with pytest.raises(
        CheckpointError, match=r"odd\.pth: holds no model weights.*keys epoch, notes"
    ):
        load_weights(path)


# --------------------------------------------------------------------------- apply_model_state


def test_shape_mismatch_names_file_keys_and_shapes(tmp_path):
    state = _model(out=3).state_dict()
    with pytest.raises(CheckpointError) as info:
        apply_model_state(_model(out=2), state, path=tmp_path / "old.pth")
    message = str(info.value)
    assert "old.pth: checkpoint does not fit the model" in message
    assert "2 shape mismatch(es): 2.weight (checkpoint [3, 8] vs model [2, 8])" in message
    assert "2.bias (checkpoint [3] vs model [2])" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = _model().state_dict()
    state.pop("0.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"1 missing key\(s\): 0\.bias; 1 unexpected key\(s\): extra"
    ):
        apply_model_state(_model(), state, path="x.pth")


def test_long_key_lists_are_shortened():
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(5)])
    with pytest.raises(CheckpointError, match=r"10 missing key\(s\): .*\.\.\. \(5 more\)"):
        apply_model_state(model, {}, path="x.pth")


def test_ddp_prefix_is_stripped():
    source, target = _model(), _model()
    with torch.no_grad():
        source[0].weight.add_(1.0)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    apply_model_state(target, state, path="ddp.pth")
    assert torch.equal(target[0].weight, source[0].weight)


# --------------------------------------------------------------------------- manager


def _manager(tmp_path, **kwargs) -> CheckpointManager:
    return CheckpointManager(tmp_path / "ckpt", model_name="unet", **kwargs)


def _manifest(manager) -> dict:
    return json.loads(manager.manifest_path.read_text())


def test_fresh_folder_has_no_latest(tmp_path):
    manager = _manager(tmp_path)
    assert manager.latest() is None and manager.best() is None and manager.entries() == []


def test_epoch_saves_are_recorded_in_a_readable_manifest(tmp_path):
    manager = _manager(tmp_path)
    first = manager.save_epoch(_state(), epoch=1, step=10, metrics={"loss": 0.5})
    second = manager.save_epoch(_state(), epoch=2, step=20, metrics={"loss": float("nan")})
    assert first.name == "unet_1.pth" and manager.latest() == second
    manifest = _manifest(manager)
    assert manifest["model_name"] == "unet" and manifest["latest"] == "unet_2.pth"
    assert [(s["file"], s["epoch"], s["step"]) for s in manifest["snapshots"]] == [
        ("unet_1.pth", 1, 10), ("unet_2.pth", 2, 20)]
    assert manifest["snapshots"][1]["metrics"] == {"loss": None}  # NaN kept out of the JSON
    assert "\n  " in manager.manifest_path.read_text()  # indented, human readable
    assert [e["epoch"] for e in manager.entries()] == [1, 2]


def test_pruning_keeps_newest_and_best(tmp_path):
    manager = _manager(tmp_path, max_snapshots=2)
    for epoch in range(1, 6):
        manager.save_epoch(_state(), epoch=epoch, step=epoch, metrics={})
        if epoch == 2:
            manager.save_best(_state(), metric="val/iou", value=0.9, epoch=2, primary=True)
            manager.save_best(_state(), metric="val/loss", value=0.1, epoch=2, primary=False)
    files = sorted(p.name for p in manager.directory.glob("*.pth"))
    assert files == ["unet_4.pth", "unet_5.pth", "unet_best.pth", "unet_best_val_loss.pth"]
    assert [e["epoch"] for e in manager.entries()] == [4, 5]
    assert manager.best() == manager.directory / "unet_best.pth"
    assert manager.best("val/loss") == manager.directory / "unet_best_val_loss.pth"
    assert manager.best("val/dice") is None
    best = _manifest(manager)["best"]
    assert best["val/iou"] == {"file": "unet_best.pth", "value": 0.9, "epoch": 2, "primary": True}
    assert _temp_files(manager.directory) == []


def test_interrupt_is_latest_until_the_next_epoch(tmp_path):
    manager = _manager(tmp_path)
    manager.save_epoch(_state(), epoch=1, step=10, metrics={})
    interrupted = manager.save_interrupt(_state(), epoch=2, step=14)
    assert interrupted.name == "unet_interrupted.pth"
    assert manager.latest() == interrupted
    assert _manifest(manager)["interrupted"]["step"] == 14
    manager.save_epoch(_state(), epoch=2, step=20, metrics={})
    assert manager.latest().name == "unet_2.pth"
    assert not interrupted.exists() and _manifest(manager)["interrupted"] is None


def test_missing_latest_file_is_an_error_not_an_older_checkpoint(tmp_path):
    manager = _manager(tmp_path)
    manager.save_epoch(_state(), epoch=1, step=1, metrics={})
    manager.save_epoch(_state(), epoch=2, step=2, metrics={})
    (manager.directory / "unet_2.pth").unlink()
    with pytest.raises(
        CheckpointError, match=r"unet_2\.pth: the manifest lists this file as the latest"
    ):
        manager.latest()


def test_missing_best_file_is_an_error(tmp_path):
    manager = _manager(tmp_path)
    manager.save_best(_state(), metric="iou", value=0.5, epoch=1, primary=True)
    (manager.directory / "unet_best.pth").unlink()
    with pytest.raises(CheckpointError, match=r"unet_best\.pth: .* best checkpoint"):
        manager.best()


def test_checkpoints_without_manifest_name_the_file_to_pass(tmp_path):
    manager = _manager(tmp_path)
    manager.save_epoch(_state(), epoch=2, step=2, metrics={})
    manager.save_epoch(_state(), epoch=10, step=10, metrics={})
    manager.manifest_path.unlink()
    with pytest.raises(CheckpointError) as info:
        manager.latest()
    message = str(info.value)
    assert "manifest.json: the manifest is missing but the folder holds 2 checkpoint(s)" in message
    assert "load_model = '" in message and message.rstrip("'").endswith("unet_10.pth")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"snapshots": {}, "best": {}}'])
def test_corrupt_manifest_is_named(tmp_path, text):
    manager = _manager(tmp_path)
    manager.directory.mkdir()
    manager.manifest_path.write_text(text)
    with pytest.raises(
        CheckpointError, match=r"manifest\.json: the checkpoint manifest is unreadable"
    ):
        manager.latest()
    with pytest.raises(CheckpointError, match="manifest is unreadable"):
        manager.save_epoch(_state(), epoch=1, step=1, metrics={})


def test_two_models_share_a_folder_with_a_manifest_keyed_by_model_name(tmp_path):
    """The templates' runs/checkpoints/{model_name}_{epoch}.pth holds a second model without a fight."""
    first = _manager(tmp_path)
    first.save_epoch(_state(), epoch=1, step=1, metrics={"loss": 1.0})
    single = _manifest(first)
    assert single["model_name"] == "unet" and "models" not in single  # one model: the old layout
    other = CheckpointManager(tmp_path / "ckpt", model_name="resnet")
    assert other.latest() is None and other.entries() == []
    other.save_epoch(_state(), epoch=3, step=6, metrics={"loss": 0.5})
    other.save_best(_state(), metric="loss", value=0.5, epoch=3, primary=True)
    first.save_epoch(_state(), epoch=2, step=2, metrics={"loss": 0.9})
    keyed = _manifest(first)["models"]
    assert sorted(keyed) == ["resnet", "unet"]
    assert [s["file"] for s in keyed["unet"]["snapshots"]] == ["unet_1.pth", "unet_2.pth"]
    assert first.latest().name == "unet_2.pth" and first.best() is None
    assert other.latest().name == "resnet_3.pth" and other.best().name == "resnet_best.pth"
    # a template without {model_name} would make the second model overwrite the first one's files
    clash = CheckpointManager(tmp_path / "ckpt", model_name="vit", filename_template="unet_{epoch}.pth")
    with pytest.raises(CheckpointError, match=r"unet_2\.pth: this file belongs to model 'unet'.*\{model_name\}"):
        clash.save_epoch(_state(), epoch=2, step=2, metrics={})
    assert first.latest().name == "unet_2.pth"


def test_old_single_model_manifest_stays_readable(tmp_path):
    manager = _manager(tmp_path)
    manager.directory.mkdir()
    (manager.directory / "unet_4.pth").write_bytes(b"")
    manager.manifest_path.write_text(json.dumps({"model_name": "unet", "snapshots": [
        {"file": "unet_4.pth", "epoch": 4, "step": 8, "metrics": {}}], "best": {}, "latest": "unet_4.pth"}))
    assert manager.latest().name == "unet_4.pth"
    CheckpointManager(tmp_path / "ckpt", model_name="resnet").save_epoch(_state(), epoch=1, step=1, metrics={})
    assert manager.latest().name == "unet_4.pth" and [e["epoch"] for e in manager.entries()] == [4]


def test_custom_template_and_resave_of_same_epoch(tmp_path):
    manager = _manager(tmp_path, filename_template="{model_name}-e{epoch:03d}.pth")
    manager.save_epoch(_state(), epoch=7, step=1, metrics={"a": 1.0})
    manager.save_epoch(_state(), epoch=7, step=2, metrics={"a": 2.0})
    assert [(e["file"], e["step"]) for e in manager.entries()] == [("unet-e007.pth", 2)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filename_template": "{model_name}.pth"}, "must contain '{epoch}'"),
        ({"filename_template": "{model_name}_{epoch}_{loss}.pth"}, "may only use"),
        ({"filename_template": "sub/{epoch}.pth"}, "folder separators"),
        ({"filename_template": "{epoch"}, "not a valid format string"),
        ({"max_snapshots": 0}, "max_snapshots must be None or >= 1"),
    ],
)
def test_bad_manager_settings(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _manager(tmp_path, **kwargs)


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    manager = _manager(tmp_path)
    manager.save_epoch(_state(), epoch=1, step=1, metrics={})
    before = manager.manifest_path.read_text()

    def failing_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(CheckpointError, match="disk gone"):
        manager.save_best(_state(), metric="iou", value=1.0, epoch=1, primary=True)
    monkeypatch.undo()
    assert manager.manifest_path.read_text() == before
    assert _temp_files(manager.directory) == []
    assert os.listdir(manager.directory)  # the earlier files are still there


def test_a_second_model_trains_and_resumes_in_the_same_checkpoint_folder(toy_task, write_config, tmp_path):
    """Two configs of one project with the examples' runs/checkpoints/{model_name}_{epoch}.pth template."""
    from bioloop import api

    common = ("task = 'toy'\nepochs = 1\niterations_per_epoch = 2\nbatch_size = 4\nload_model = None\n"
              "model_save_path = 'runs/checkpoints/{model_name}_{epoch}.pth'\n")
    first = write_config(common + "model_name = 'first'\nlogs_save_path = 'runs/logs/first'\n", "first.py")
    second = write_config(common + "model_name = 'second'\nlogs_save_path = 'runs/logs/second'\n", "second.py")
    api.train(str(first), quiet=True)
    api.train(str(second), quiet=True)  # refused before: the manifest belonged to 'first'
    folder = tmp_path / "runs" / "checkpoints"
    assert sorted(json.loads((folder / "manifest.json").read_text())["models"]) == ["first", "second"]
    resumed = api.train(str(first), ["epochs=2", "load_model=latest"], quiet=True)
    assert resumed["epochs_completed"] == 2
    assert CheckpointManager(folder, model_name="second").latest().name == "second_1.pth"
    assert CheckpointManager(folder, model_name="first").latest().name == "first_2.pth"
