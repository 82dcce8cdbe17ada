"""Run records: config byte copy, resolved YAML, run.json and its updates."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
import yaml

from bioloop._version import __version__
from bioloop.config.record import config_sha256, update_run_json, write_run_records

CONFIG = b"# my experiment\r\nlearning_rate = 1e-3  \n\tepochs = 10\n\xc3\xa9 = 'kept as bytes'\n"


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "src" / "train.py"
    path.parent.mkdir()
    path.write_bytes(CONFIG)
    return path


def test_config_copy_is_byte_identical(tmp_path, config_file):
    run_dir = tmp_path / "run"
    write_run_records(run_dir, config_path=config_file, resolved={})
    assert (run_dir / "train.py").read_bytes() == CONFIG


def test_edited_config_on_resume_keeps_both(tmp_path, config_file):
    run_dir = tmp_path / "run"
    write_run_records(run_dir, config_path=config_file, resolved={})
    write_run_records(run_dir, config_path=config_file, resolved={})  # same bytes: no new copy
    assert sorted(p.name for p in run_dir.glob("train*.py")) == ["train.py"]

    edited = CONFIG.replace(b"epochs = 10", b"epochs = 20")
    config_file.write_bytes(edited)
    write_run_records(run_dir, config_path=config_file, resolved={})
    copies = sorted(run_dir.glob("train*.py"))
    assert len(copies) == 2
    assert (run_dir / "train.py").read_bytes() == CONFIG  # the original stays
    dated = next(p for p in copies if p.name != "train.py")
    assert dated.read_bytes() == edited
    assert dated.name.startswith("train.") and dated.name.endswith("Z.py")

    write_run_records(run_dir, config_path=config_file, resolved={})  # edited again? no: same
    assert len(list(run_dir.glob("train*.py"))) == 2


def test_no_config_path_skips_the_copy(tmp_path):
    record = write_run_records(tmp_path, config_path=None, resolved={"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolved_config.yaml", "run.json"]
    assert record["config_path"] is None and record["config_sha256"] is None


def test_resolved_yaml_reads_back_in_order(tmp_path, config_file):
    resolved = {
        "task": "segmentation",
        "learning_rate": 0.001,
        "epochs": 10,
        "amp": False,
        "model_to_load": None,
        "optimizer": {"type": "AdamW", "params": {"weight_decay": 0.01}},
        "classes": ["mito", "er"],
        "model": "mypkg.nets.UNet(depth=4)",
    }
    write_run_records(tmp_path / "run", config_path=config_file, resolved=resolved)
    text = (tmp_path / "run" / "resolved_config.yaml").read_text()
    assert yaml.safe_load(text) == resolved
    assert list(yaml.safe_load(text)) == list(resolved)  # not sorted
    assert text.startswith("task: segmentation\n")


def test_resolved_must_be_plain_data(tmp_path):
    with pytest.raises(TypeError, match="plain data"):
        write_run_records(tmp_path, config_path=None, resolved={"model": object()})


def test_run_json_fields(tmp_path, config_file, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bioloop", "train", "train.py", "-s", "epochs=3"])
    record = write_run_records(
        tmp_path / "run", config_path=config_file, resolved={}, extra={"task": "segmentation"}
    )
    on_disk = json.loads((tmp_path / "run" / "run.json").read_text())
    assert on_disk == record
    assert record["argv"] == ["bioloop", "train", "train.py", "-s", "epochs=3"]
    assert record["start_time"].endswith("+00:00")
    assert record["config_sha256"] == hashlib.sha256(CONFIG).hexdigest()
    assert record["config_path"] == str(config_file.resolve())
    assert record["versions"]["bioloop"] == __version__
    import torch

    assert record["versions"]["torch"] == torch.__version__
    assert {"numpy", "zarr", "torchvision"} <= set(record["versions"])
    assert set(record["cuda"]) == {"available", "device_names"}
    assert record["task"] == "segmentation"
    for key in ("hostname", "user", "cwd", "python", "platform"):
        assert key in record
    assert "previous_runs" not in record


def test_resume_keeps_previous_run_json(tmp_path):
    first = write_run_records(tmp_path, config_path=None, resolved={}, extra={"attempt": 1})
    update_run_json(tmp_path, status="interrupted")
    second = write_run_records(tmp_path, config_path=None, resolved={}, extra={"attempt": 2})
    third = write_run_records(tmp_path, config_path=None, resolved={}, extra={"attempt": 3})
    assert second["previous_runs"] == [{**first, "status": "interrupted"}]
    assert [run["attempt"] for run in third["previous_runs"]] == [1, 2]
    assert all("previous_runs" not in run for run in third["previous_runs"])
    assert json.loads((tmp_path / "run.json").read_text())["attempt"] == 3


def test_update_run_json_merges(tmp_path):
    write_run_records(tmp_path, config_path=None, resolved={}, extra={"task": "pose"})
    merged = update_run_json(
        tmp_path, end_time="2025-01-01T00:00:00+00:00", status="completed", final={"val/pck": 0.9}
    )
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk == merged
    assert on_disk["task"] == "pose" and on_disk["status"] == "completed"
    assert on_disk["final"] == {"val/pck": 0.9}
    assert "argv" in on_disk


def test_update_run_json_without_a_record_creates_one(tmp_path):
    assert update_run_json(tmp_path, status="failed") == {"status": "failed"}


def test_writes_leave_no_temp_files(tmp_path, config_file):
    write_run_records(tmp_path, config_path=config_file, resolved={"a": [1, 2]})
    update_run_json(tmp_path, status="completed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "resolved_config.yaml", "run.json", "src", "train.py"]


def test_config_sha256_golden(tmp_path):
    path = tmp_path / "c.py"
    path.write_bytes(b"abc")
    # SHA-256("abc") from FIPS 180-2, appendix B.1
    assert config_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
