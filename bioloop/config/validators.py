"""Field validators whose messages read well after ``<file>: <key>:``.

Each validator tolerates ``None`` (optional settings) and is called with
``(instance, attribute, value)`` like any attrs validator; the instance may be None.
"""

from __future__ import annotations

import math


def _bad(what: str, value) -> ValueError:
    return ValueError(f"{what} (got {value!r})")


def registered_task(_inst, _attr, value):
    """A task name in the registry ``bioloop.tasks.TASKS`` (the one list of task names)."""
    from bioloop.tasks import TASKS

    if value is not None and value not in TASKS:
        raise _bad(f"must be one of {', '.join(repr(t) for t in TASKS)}", value)


def at_least(bound: float):
    def check(_inst, _attr, value):
        if value is not None and value < bound:
            raise _bad(f"must be >= {bound}", value)

    return check


def greater_than(bound: float):
    def check(_inst, _attr, value):
        if value is not None and not value > bound:
            raise _bad(f"must be > {bound}", value)

    return check


def below(bound: float):
    def check(_inst, _attr, value):
        if value is not None and not value < bound:
            raise _bad(f"must be < {bound}", value)

    return check


def between(low: float, high: float):
    def check(_inst, _attr, value):
        if value is not None and not (low <= value <= high):
            raise _bad(f"must be between {low} and {high}", value)

    return check


def finite(_inst, _attr, value):
    if value is not None and not math.isfinite(value):
        raise _bad("must be a finite number", value)


def non_empty(_inst, _attr, value):
    if value is not None and len(value) == 0:
        raise _bad("must not be empty", value)


def each_positive(_inst, _attr, value):
    if value is not None and any(v <= 0 for v in value):
        raise _bad("every entry must be > 0", value)


def unique(_inst, _attr, value):
    if value is not None and len(set(value)) != len(value):
        raise _bad("entries must be unique", value)


def template_with(*keys: str):
    """A str.format template that must contain each ``{key}`` and no other fields."""

    def check(_inst, _attr, value):
        if value is None:
            return
        import string

        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise _bad(f"is not a valid template ({exc})", value) from None
        missing = [k for k in keys if k not in fields]
        if missing:
            raise _bad("must contain " + ", ".join("{" + k + "}" for k in missing), value)

    return check


def all_of(*validators):
    def check(inst, attr, value):
        for validator in validators:
            validator(inst, attr, value)

    return check
