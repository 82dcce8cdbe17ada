"""Progress bars (tqdm) for training epochs and validation passes.

Bars are drawn on stderr only when a person watches: not with ``--quiet``, not when stderr
is not a terminal. ``BIOLOOP_PROGRESS=1`` forces them on (e.g. under a scheduler that
keeps a pseudo-terminal), ``BIOLOOP_PROGRESS=0`` forces them off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Callable

from tqdm import tqdm

ENV_VAR = "BIOLOOP_PROGRESS"


def progress_enabled(quiet: bool) -> bool:
    """Whether to draw bars: never when quiet; else the env variable, else stderr is a TTY."""
    if quiet:
        return False
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced == "0":
        return False
    if forced == "1":
        return True
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def train_bar(
    total: int | None, *, epoch: int, epochs: int, enabled: bool, file: IO[str] | None = None
) -> tqdm:
    """A bar over one epoch's batches labelled ``epoch 3/10``; the engine sets its postfix."""
    return tqdm(
        total=total,
        desc=f"epoch {epoch}/{epochs}",
        unit="it",
        disable=not enabled,
        dynamic_ncols=True,
        file=file,
    )


class ValidationBar:
    """A bar over one validation pass that also keeps its time budget.

    ``total_batches`` is the dataset length (None when unknown) and ``batch_limit`` the
    user's ``validation_batch_limit``; the bar's total is the smaller of the two. With a
    ``time_limit`` (seconds) the postfix shows the budget left and :meth:`expired` says when
    it is spent, whether or not the bar is drawn. ``clock`` replaces time.monotonic in tests.
    """

    def __init__(
        self,
        total_batches: int | None,
        *,
        time_limit: float | None,
        enabled: bool,
        batch_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        file: IO[str] | None = None,
    ):
        known = [n for n in (total_batches, batch_limit) if n is not None]
        self.total = min(known) if known else None
        self.time_limit = time_limit
        self._clock = clock
        self._start = clock()
        self._shown = self._remaining_text()
        self._bar = tqdm(
            total=self.total,
            desc="validation",
            unit="batch",
            disable=not enabled,
            dynamic_ncols=True,
            leave=False,
            file=file,
            postfix=self._shown,
        )

    def remaining(self) -> float | None:
        """Seconds left of the time budget (never below 0); None without a limit."""
        if self.time_limit is None:
            return None
        return max(0.0, self.time_limit - (self._clock() - self._start))

    def expired(self) -> bool:
        """True once the time limit has passed; always False without a limit."""
        remaining = self.remaining()
        return remaining is not None and remaining <= 0.0

    def update(self, n: int = 1) -> None:
        """Count ``n`` finished batches and refresh the time left."""
        self._bar.update(n)
        self._show_remaining()

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "ValidationBar":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _remaining_text(self) -> str | None:
        remaining = self.remaining()
        return None if remaining is None else f"left {remaining:.0f}s"

    def _show_remaining(self) -> None:
        """Redraw the postfix when the whole seconds shown change (at most once a second)."""
        if self._bar.disable or self.time_limit is None:
            return
        text = self._remaining_text()
        if text != self._shown:
            self._shown = text
            self._bar.set_postfix_str(text, refresh=True)


__all__ = ["progress_enabled", "train_bar", "ValidationBar", "ENV_VAR"]
