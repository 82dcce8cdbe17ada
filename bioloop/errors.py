"""Errors bioloop raises for problems the user can fix.

Every message has the shape ``<where>: <what is wrong> (got <value>); <how to fix>``.
``cli.py`` maps them to exit codes: ConfigError -> 2, any other BioloopError -> 1.
"""

from __future__ import annotations

_NOTHING = object()


def format_message(where, what, got=_NOTHING, fix=None) -> str:
    """Build a message in the house format; ``got`` is shown with repr()."""
    text = f"{where}: {what}" if where else str(what)
    if got is not _NOTHING:
        text += f" (got {got!r})"
    if fix:
        text += f"; {fix}"
    return text


class BioloopError(Exception):
    """Base class of every error bioloop raises on purpose."""

    exit_code = 1

    @classmethod
    def at(cls, where, what, got=_NOTHING, fix=None):
        """Construct with the house message format."""
        return cls(format_message(where, what, got, fix))


class ConfigError(BioloopError):
    """A config file or command-line override is wrong. ``problems`` lists each one."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems) if problems else [message]
        super().__init__(message)

    @classmethod
    def many(cls, problems: list[str]) -> "ConfigError":
        if len(problems) == 1:
            return cls(problems[0], problems)
        head = f"{len(problems)} problems in the configuration:\n"
        return cls(head + "\n".join(f"  - {p}" for p in problems), problems)


class ConfigExecutionError(ConfigError):
    """The user's config file raised while it ran; ``user_traceback`` is its own traceback."""

    def __init__(self, message: str, user_traceback: str):
        self.user_traceback = user_traceback
        super().__init__(message)


class DataError(BioloopError):
    """Input data cannot be read or does not match the settings."""


class CheckpointError(BioloopError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class TrainingError(BioloopError):
    """Training cannot go on (a non-finite loss, a diverged run)."""


class TrainingInterrupted(BioloopError):
    """SIGINT/SIGTERM arrived: a checkpoint was saved and the run can be resumed."""

    def __init__(self, message: str, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message)
