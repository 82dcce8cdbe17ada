"""Command-line options of ``bioloop predict`` / ``evaluate``, declared once per task.

Each task lists its options in ``bioloop/tasks/<task>/options.py`` (``PREDICT`` and
``EVALUATE``: :class:`Option` tuples with flag, type, the task's default and help); options
every task has are ``COMMON`` here. ``cli.py`` generates the click options from these tables
(:func:`click_options`): an option several tasks list becomes one flag whose help names each
task; the click default is always "not given", and :func:`task_values` then refuses a flag the
config's task does not list (``--tta do not apply to the pose task``) and fills in the task's
own default. Only click and attrs are imported here, so ``bioloop --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import attrs
import click

COMMANDS = ("predict", "evaluate")


@attrs.frozen
class Option:
    """One command-line option of one task.

    ``flag``: ``"--batch-size"`` (or ``"--save-video/--no-save-video"``); ``name``: the
    parameter name; ``type``: a click type (None: text); ``default``: this task's value when
    the flag is not given; ``show_default`` appends it to the help.
    """

    flag: str
    name: str
    help: str
    type: Any = None
    default: Any = None
    is_flag: bool = False
    multiple: bool = False
    required: bool = False
    show_default: bool = False

    def shape(self) -> tuple:
        """What must agree when two tasks list the same option."""
        return (self.flag, repr(self.type), self.is_flag, self.multiple, self.required)


COMMON = {
    "predict": (
        Option("--output", "output_path", "Segmentation: output OME-NGFF zarr folder (local). "
               "Pose: the DLC-style CSV to write. Tracking: the .slp, CTC result folder or MOT "
               "txt to write.", required=True),
        Option("--checkpoint", "checkpoint", "Checkpoint file (default: the run's best, else "
               "its latest)."),
        Option("--overwrite", "overwrite", "Replace an existing output.", is_flag=True,
               default=False),
    ),
    "evaluate": (
        Option("--prediction", "prediction", "Prediction written by `bioloop predict` or "
               "`bioloop process`. Tracking: repeatable, paired in order with --truth; a CTC "
               "dataset root scores every sequence, a folder of MOT <name>.txt files every "
               "file.", multiple=True, required=True),
        Option("--report", "report", "Also write the scores to this JSON file."),
    ),
}


def task_tables(command: str) -> dict[str, tuple[Option, ...]]:
    """``{task: its options of command}`` for every registered task, in registry order."""
    from bioloop.tasks import TASKS

    attr = command.upper()
    return {task: getattr(importlib.import_module(f"bioloop.tasks.{task}.options"), attr)
            for task in TASKS}


def _merged(command: str) -> list[tuple[Option, dict[str, Option]]]:
    """One entry per option name: its shape and the tasks listing it (first-listed order)."""
    order: dict[str, tuple[Option, dict[str, Option]]] = {}
    for option in COMMON[command]:
        order[option.name] = (option, {})
    for task, options in task_tables(command).items():
        for option in options:
            if option.name in order and not order[option.name][1]:
                raise ValueError(f"{task}: {command} option {option.flag} is common to every task")
            first, tasks = order.setdefault(option.name, (option, {}))
            if option.shape() != first.shape():
                raise ValueError(f"{task}: {command} option {option.flag} differs from another "
                                 f"task's ({option.shape()} != {first.shape()})")
            tasks[task] = option
    return list(order.values())


def _help(common: Option, tasks: dict[str, Option]) -> str:
    if not tasks:
        return common.help + (f" [default: {common.default}]" if common.show_default else "")
    parts = []
    for task, option in tasks.items():
        text = f"{task.capitalize()}: {option.help}"
        if option.show_default and option.default not in (None, False):
            text = text.rstrip(".") + f" [default: {option.default}]."
        parts.append(text)
    return " ".join(parts)


def click_options(command: str):
    """A decorator adding every task's ``command`` options to a click command."""
    def decorate(func):
        for common, tasks in reversed(_merged(command)):
            kwargs: dict[str, Any] = dict(help=_help(common, tasks))
            if common.is_flag and "/" not in common.flag:
                kwargs.update(is_flag=True)
            else:
                kwargs.update(default=None, type=common.type, multiple=common.multiple,
                              required=common.required)
            func = click.option(common.flag, common.name, **kwargs)(func)
        return func
    return decorate


def task_values(command: str, task: str, given: dict[str, Any], flags: dict[str, str]
                ) -> dict[str, Any]:
    """The options of ``task``: a flag of another task is a UsageError; unset ones get defaults.

    ``given`` maps parameter names to what click parsed; ``flags`` their flag as shown.
    """
    own = {o.name: o for o in COMMON[command] + task_tables(command)[task]}
    every = {option.name: option for option, _ in _merged(command)}
    refused = [flags[name] for name, value in given.items()
               if name not in own and name in every and _set(value, every[name])]
    if refused:
        raise click.UsageError(f"{', '.join(refused)} do not apply to the {task} task")
    return {name: given[name] if _set(given.get(name), option) else _default(option)
            for name, option in own.items()}


def _default(option: Option):
    return () if option.multiple and option.default is None else option.default


def _set(value, option: Option) -> bool:
    """Whether the user gave ``option`` (0 counts; ``--no-x`` of a ``--x/--no-x`` pair too)."""
    if "/" in option.flag:
        return value is not None
    return not (value is None or value is False or value == ())
