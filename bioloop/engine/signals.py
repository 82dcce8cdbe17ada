"""SIGINT/SIGTERM become a request to stop at the next optimizer step (a second SIGINT stops at once)."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Installed for the duration of a training run (main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    def _handle(self, signum, _frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None
