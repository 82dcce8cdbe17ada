"""Progress bars: when they show, what they say, and the validation time budget."""

from __future__ import annotations

import io
import sys

import pytest

from bioloop.engine.progress import ValidationBar, progress_enabled, train_bar


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


@pytest.mark.parametrize(
    "quiet, tty, env, expected",
    [
        (False, True, None, True),
        (False, False, None, False),  # piped into a log file
        (True, True, None, False),  # --quiet
        (False, True, "0", False),
        (False, False, "1", True),  # forced on without a terminal
        (True, False, "1", False),  # --quiet still wins
    ],
)
def test_progress_enabled(monkeypatch, quiet, tty, env, expected):
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    if env is None:
        monkeypatch.delenv("BIOLOOP_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("BIOLOOP_PROGRESS", env)
    assert progress_enabled(quiet) is expected


def test_train_bar_shows_epoch_and_postfix():
    out = io.StringIO()
    bar = train_bar(4, epoch=3, epochs=10, enabled=True, file=out)
    bar.set_postfix(loss="0.500", lr="1e-03")
    bar.update(4)
    bar.close()
    text = out.getvalue()
    assert "epoch 3/10" in text
    assert "4/4" in text
    assert "loss=0.500" in text and "lr=1e-03" in text


def test_disabled_bars_write_nothing(capsys):
    bar = train_bar(None, epoch=1, epochs=2, enabled=False)
    bar.set_postfix(loss=1.0)
    bar.update(3)
    bar.close()
    clock = _Clock()
    val = ValidationBar(10, time_limit=5, enabled=False, clock=clock)
    val.update()
    clock.now += 6
    assert val.expired()  # the budget is kept even when nothing is drawn
    val.close()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_validation_bar_counts_down_the_time_budget():
    clock, out = _Clock(), io.StringIO()
    bar = ValidationBar(100, time_limit=30, enabled=True, clock=clock, file=out)
    assert bar.remaining() == 30 and not bar.expired()
    clock.now += 18.2
    bar.update()
    assert "left 12s" in out.getvalue()
    assert bar.remaining() == pytest.approx(11.8)
    assert not bar.expired()
    clock.now += 11.8
    assert bar.expired()
    clock.now += 5
    assert bar.remaining() == 0.0 and bar.expired()
    bar.close()


def test_validation_bar_without_time_limit_never_expires():
    clock = _Clock()
    bar = ValidationBar(None, time_limit=None, enabled=True, clock=clock, file=io.StringIO())
    clock.now += 1e6
    assert bar.remaining() is None and not bar.expired()
    assert bar.total is None
    bar.close()


@pytest.mark.parametrize(
    "length, limit, total", [(100, 5, 5), (3, 5, 3), (None, 5, 5), (7, None, 7), (None, None, None)]
)
def test_validation_bar_total_is_smaller_of_length_and_limit(length, limit, total):
    out = io.StringIO()
    with ValidationBar(length, time_limit=None, enabled=True, batch_limit=limit, file=out) as bar:
        assert bar.total == total
        bar.update(2)
    if total is not None:
        assert f"0/{total}" in out.getvalue()  # the bar is drawn with its total
