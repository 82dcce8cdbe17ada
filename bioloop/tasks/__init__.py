"""The task registry. The engine never asks which task it runs; it asks the task object.

Tasks are imported on first use so that ``bioloop --help`` stays fast.
"""

from __future__ import annotations

import importlib

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError

# name -> "module:attribute" of the Task object
TASKS = {
    "segmentation": "bioloop.tasks.segmentation.task:TASK",
    "pose": "bioloop.tasks.pose.task:TASK",
    "tracking": "bioloop.tasks.tracking.task:TASK",
}
# tasks the config contract knows but this version does not ship yet
PLANNED: tuple[str, ...] = ()

_loaded: dict = {}


def get_task(name, *, where: str = "task"):
    """Return the Task object registered under ``name``."""
    if name not in TASKS:
        if name in PLANNED:
            raise ConfigError.at(
                where,
                f"task '{name}' is not available in this version of bioloop",
                fix=f"available tasks: {', '.join(TASKS)}",
            )
        raise ConfigError.at(
            where,
            f"unknown task{did_you_mean(str(name), TASKS)}",
            got=name,
            fix=f"choose one of {', '.join(repr(t) for t in TASKS)}",
        )
    if name not in _loaded:
        module_name, attr = TASKS[name].split(":")
        _loaded[name] = getattr(importlib.import_module(module_name), attr)
    return _loaded[name]


def get_task_config(name, *, where: str = "task"):
    """The attrs schema of a task's settings."""
    return get_task(name, where=where).Config


def tasks_with(hook: str) -> list[str]:
    """Names of the registered tasks that override ``hook`` of the Task base class."""
    from bioloop.tasks.base import Task

    default = getattr(Task, hook)
    return [name for name in TASKS if getattr(type(get_task(name)), hook) is not default]
