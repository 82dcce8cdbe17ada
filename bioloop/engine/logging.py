"""Run logging: TensorBoard, a plain ``metrics.csv`` and, when configured, Weights & Biases.

Only rank 0 logs: other ranks build ``RunLogger(..., enabled=False)``, whose methods do
nothing and which creates nothing on disk.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

from bioloop.errors import ConfigError

CSV_NAME = "metrics.csv"
CSV_HEADER = ("time", "epoch", "step", "tag", "value")


class RunLogger:
    """Write scalars, figures, text and hparams of one run into ``log_dir``.

    ``wandb`` is the user's ``logger.wandb`` dict (``project``, ``entity``, ``mode``, ...),
    passed to ``wandb.init``; ``where`` names the config file in error messages.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        wandb: dict | None = None,
        run_name: str | None = None,
        where: str = "",
    ):
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self._use_tensorboard = tensorboard
        self._writer = None
        self._csv_file = None
        self._csv = None
        self._wandb = None
        self._wandb_run = None
        self._start = time.monotonic()
        if not enabled:
            return
        if wandb is not None:
            self._wandb = _import_wandb(where)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self._wandb is not None:
            options = {"dir": str(self.log_dir), "name": run_name, **wandb}
            self._wandb_run = self._wandb.init(**options)

    # -- public API -------------------------------------------------------------------

    def scalars(self, values: dict[str, float], *, step: int, epoch: int) -> None:
        """Log ``values`` at ``step``; every row is flushed to ``metrics.csv`` at once."""
        if not self.enabled or not values:
            return
        numbers = {tag: _to_float(value) for tag, value in values.items()}
        writer = self._tensorboard()
        if writer is not None:
            for tag, value in numbers.items():
                writer.add_scalar(tag, value, global_step=step)
        elapsed = f"{time.monotonic() - self._start:.3f}"
        rows = [
            (elapsed, epoch, step, tag, _csv_value(values[tag], value))
            for tag, value in numbers.items()
        ]
        self._csv_writer().writerows(rows)
        self._csv_file.flush()
        if self._wandb_run is not None:
            self._wandb_run.log({**numbers, "epoch": epoch}, step=step)

    def figure(self, tag: str, fig: Any, *, step: int) -> None:
        """Log a matplotlib figure and close it (it is closed on disabled loggers too)."""
        if not self.enabled:
            _close_figure(fig)
            return
        if self._wandb_run is not None:
            self._wandb_run.log({tag: self._wandb.Image(fig)}, step=step)
        writer = self._tensorboard()
        if writer is not None:
            writer.add_figure(tag, fig, global_step=step, close=True)
        else:
            _close_figure(fig)

    def text(self, tag: str, text: str, *, step: int) -> None:
        """Log a piece of text (markdown in TensorBoard)."""
        if not self.enabled:
            return
        writer = self._tensorboard()
        if writer is not None:
            writer.add_text(tag, text, global_step=step)
        if self._wandb_run is not None:
            self._wandb_run.log({tag: self._wandb.Html(f"<pre>{_escape(text)}</pre>")}, step=step)

    def hparams(self, hparams: dict, metrics: dict[str, float], *, step: int | None = None) -> None:
        """Record hyperparameters and their metrics in this run's own directory.

        Nested dicts are flattened to dotted keys; values TensorBoard cannot show are
        written with str(). The metrics are also written as scalars so the hparams view
        has values to show.
        """
        if not self.enabled:
            return
        flat = {key: _hparam_value(value) for key, value in _flatten(hparams).items()}
        numbers = {tag: _to_float(value) for tag, value in metrics.items()}
        writer = self._tensorboard()
        if writer is not None:
            from torch.utils.tensorboard.summary import hparams as hparams_summaries

            for summary in hparams_summaries(flat, numbers):
                writer.file_writer.add_summary(summary, step)
            for tag, value in numbers.items():
                writer.add_scalar(tag, value, global_step=step)
        if self._wandb_run is not None:
            self._wandb_run.config.update(_flatten(hparams), allow_val_change=True)
            self._wandb_run.summary.update(numbers)

    def flush(self) -> None:
        """Push everything written so far to disk."""
        if self._writer is not None:
            self._writer.flush()
        if self._csv_file is not None:
            self._csv_file.flush()

    def close(self) -> None:
        """Flush and release the writers; safe to call twice."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = None
            self._csv = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- helpers ----------------------------------------------------------------------

    def _tensorboard(self):
        """The SummaryWriter, created on first use; None when TensorBoard is off."""
        if not self._use_tensorboard:
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def _csv_writer(self):
        """The csv writer on ``metrics.csv``; a header only when the file is new or empty."""
        if self._csv is None:
            path = self.log_dir / CSV_NAME
            new = not path.exists() or path.stat().st_size == 0
            self._csv_file = open(path, "a", newline="", encoding="utf-8")
            self._csv = csv.writer(self._csv_file)
            if new:
                self._csv.writerow(CSV_HEADER)
        return self._csv


def _import_wandb(where: str):
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            f"{where}: logger.wandb is set but the 'wandb' package is not installed; "
            "pip install wandb (or bioloop[wandb]) or remove logger.wandb"
        ) from None
    return wandb


def _to_float(value: Any) -> float:
    """A Python float from a number, a 0-d tensor or a numpy scalar (NaN stays NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


def _csv_value(original: Any, value: float) -> str:
    """Shortest text that reads back to the value: ``0.001`` for a float32 0.001, ``nan``."""
    dtype = getattr(original, "dtype", None)
    floating = getattr(dtype, "is_floating_point", None) or getattr(dtype, "kind", "") == "f"
    if floating and getattr(dtype, "itemsize", 8) < 8 and math.isfinite(value):
        import numpy

        return repr(float(str(numpy.float32(value))))
    return repr(value)


def _hparam_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if "torch" in sys.modules and isinstance(value, sys.modules["torch"].Tensor):
        return value
    return str(value)


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; empty dicts are kept as values."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _close_figure(fig: Any) -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["RunLogger", "CSV_NAME", "CSV_HEADER"]
