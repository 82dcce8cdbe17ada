"""RunLogger: metrics.csv, TensorBoard scalars/figures/text/hparams, disabled ranks, W&B errors."""

from __future__ import annotations

import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from bioloop.engine.logging import RunLogger  # noqa: E402
from bioloop.errors import ConfigError  # noqa: E402


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_metrics_csv_long_format(tmp_path):
    with RunLogger(tmp_path / "logs") as logger:
        logger.scalars({"train/loss": 0.5, "train/lr": torch.tensor(1e-3)}, step=10, epoch=1)
        logger.scalars({"val/iou": float("nan")}, step=20, epoch=2)
    rows = _rows(tmp_path / "logs" / "metrics.csv")
    assert rows[0] == ["time", "epoch", "step", "tag", "value"]
    assert [r[1:] for r in rows[1:]] == [
        ["1", "10", "train/loss", "0.5"],
        ["1", "10", "train/lr", "0.001"],
        ["2", "20", "val/iou", "nan"],
    ]
    times = [float(r[0]) for r in rows[1:]]
    assert all(t >= 0 for t in times) and times == sorted(times)


def test_metrics_csv_is_flushed_before_close(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.scalars({"loss": 1.25}, step=1, epoch=0)
    # A crash right now must not lose the row: it is already on disk.
    assert _rows(tmp_path / "metrics.csv")[1][3:] == ["loss", "1.25"]
    logger.close()
    logger.close()  # twice is fine


def test_metrics_csv_appends_on_resume_without_second_header(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as first:
        first.scalars({"loss": 2.0}, step=1, epoch=1)
    with RunLogger(tmp_path, tensorboard=False) as resumed:
        resumed.scalars({"loss": 1.0}, step=2, epoch=2)
    rows = _rows(tmp_path / "metrics.csv")
    assert [r[0] for r in rows].count("time") == 1
    assert [(r[2], r[4]) for r in rows[1:]] == [("1", "2.0"), ("2", "1.0")]


def test_tensorboard_scalars_read_back(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.scalars({"train/loss": 0.75}, step=3, epoch=1)
        logger.scalars({"train/loss": 0.25, "val/dice": 0.5}, step=6, epoch=2)
    acc = _events(tmp_path)
    assert set(acc.Tags()["scalars"]) == {"train/loss", "val/dice"}
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert loss == [(3, 0.75), (6, 0.25)]
    assert [(e.step, e.value) for e in acc.Scalars("val/dice")] == [(6, 0.5)]


def test_nan_scalar_reaches_tensorboard(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.scalars({"loss": float("inf")}, step=1, epoch=0)
    assert math.isinf(_events(tmp_path).Scalars("loss")[0].value)


def test_figure_is_written_and_closed(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    with RunLogger(tmp_path) as logger:
        logger.figure("val/prediction", fig, step=4)
    assert not plt.fignum_exists(fig.number)
    acc = _events(tmp_path)
    assert acc.Tags()["images"] == ["val/prediction"]
    assert acc.Images("val/prediction")[0].step == 4


def test_text_is_written(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.text("config", "learning_rate: 0.001", step=0)
    acc = _events(tmp_path)
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_hparams_go_into_the_same_run_directory(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.scalars({"train/loss": 1.0}, step=1, epoch=1)
        logger.hparams(
            {"learning_rate": 1e-3, "optimizer": "AdamW", "amp": True, "shape": (64, 64),
             "model": {"depth": 4}, "scheduler": None},
            {"hparam/val_iou": 0.8},
        )
    subdirs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert subdirs == []  # no timestamped sub-folder as add_hparams would make
    acc = _events(tmp_path)
    plugins = acc.PluginTagToContent("hparams")
    assert set(plugins) == {"_hparams_/experiment", "_hparams_/session_start_info",
                            "_hparams_/session_end_info"}
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        plugins["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["learning_rate"].number_value == pytest.approx(1e-3)
    assert start.hparams["optimizer"].string_value == "AdamW"
    assert start.hparams["amp"].number_value == 1  # torch stores bools as numbers
    assert start.hparams["shape"].string_value == "(64, 64)"
    assert start.hparams["model.depth"].number_value == 4
    assert start.hparams["scheduler"].string_value == "None"
    assert [e.value for e in acc.Scalars("hparam/val_iou")] == [pytest.approx(0.8)]


def test_disabled_logger_creates_nothing(tmp_path):
    log_dir = tmp_path / "rank1"
    fig = plt.figure()
    with RunLogger(log_dir, enabled=False, wandb={"project": "x"}) as logger:
        logger.scalars({"loss": 1.0}, step=1, epoch=1)
        logger.figure("f", fig, step=1)
        logger.text("t", "hello", step=1)
        logger.hparams({"lr": 0.1}, {"m": 1.0})
        logger.flush()
    assert not log_dir.exists()
    assert not plt.fignum_exists(fig.number)  # closed anyway, so ranks do not leak figures


def test_wandb_missing_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ConfigError) as info:
        RunLogger(tmp_path / "logs", wandb={"project": "demo"}, where="train.py")
    assert str(info.value) == (
        "train.py: logger.wandb is set but the 'wandb' package is not installed; "
        "pip install wandb (or bioloop[wandb]) or remove logger.wandb"
    )


class _FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.logged = []
        self.config = _Recorder()
        self.summary = _Recorder()
        self.finished = False

    def log(self, data, step=None):
        self.logged.append((data, step))

    def finish(self):
        self.finished = True


class _Recorder(dict):
    def update(self, data, **_):
        super().update(data)


class _FakeWandb:
    def __init__(self):
        self.run = None

    def init(self, **kwargs):
        self.run = _FakeRun(**kwargs)
        return self.run

    @staticmethod
    def Image(fig):
        return ("image", fig)

    @staticmethod
    def Html(text):
        return ("html", text)


def test_wandb_receives_scalars_figures_and_hparams(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    fig = plt.figure()
    with RunLogger(tmp_path, tensorboard=False, run_name="r1",
                   wandb={"project": "demo", "mode": "offline"}) as logger:
        logger.scalars({"loss": 0.5}, step=2, epoch=1)
        logger.figure("pred", fig, step=2)
        logger.hparams({"lr": 0.1, "model": {"depth": 3}}, {"val/iou": 0.7})
    run = fake.run
    assert run.init_kwargs == {
        "dir": str(tmp_path), "name": "r1", "project": "demo", "mode": "offline"}
    assert run.logged[0] == ({"loss": 0.5, "epoch": 1}, 2)
    assert run.logged[1] == ({"pred": ("image", fig)}, 2)
    assert dict(run.config) == {"lr": 0.1, "model.depth": 3}
    assert dict(run.summary) == {"val/iou": 0.7}
    assert run.finished
