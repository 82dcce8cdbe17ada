"""Strict structuring of user settings into attrs schemas, collecting every problem.

cattrs does the type walking; the hooks registered here make it strict (no ``"false"``
-> True, no ``10.7`` -> 10, no ``1`` -> "1"). ``structure_section`` checks one attrs
class against a mapping (or an instance of it), reports unknown keys with a
did-you-mean, runs each field's validator and returns every problem at once.
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Any, Literal, Union

import attrs
import cattrs

_NoneType = type(None)


class _Invalid(ValueError):
    """One value does not fit its declared type; the message is user-facing."""


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def type_name(tp: Any) -> str:
    """A short, readable name for a type annotation (for messages and docs)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return "any"
    if tp is _NoneType:
        return "None"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple, dict, set):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if isinstance(tp, type):
        if attrs.has(tp):
            return f"{tp.__name__} section (or dict)"
        return tp.__name__
    return str(tp)


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is Union or (origin is not None and origin.__class__.__name__ == "UnionType") or (
        tp.__class__.__name__ == "UnionType"
    )


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()

    def _int(value, _):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_describe(value)}")
        return value

    def _float(value, _):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {_describe(value)}")
        return float(value)

    def _bool(value, _):
        if not isinstance(value, bool):
            raise _Invalid(f"expected True or False, got {_describe(value)}")
        return value

    def _str(value, _):
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_describe(value)}")
        return value

    def _path(value, _):
        if not isinstance(value, (str, os.PathLike)):
            raise _Invalid(f"expected a path, got {_describe(value)}")
        return Path(value)

    def _any(value, _):
        return value

    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(Path, _path)
    conv.register_structure_hook(Any, _any)

    def _literal(value, tp):
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return choice
        raise _Invalid(f"expected one of {', '.join(repr(c) for c in choices)}, got {_describe(value)}")

    conv.register_structure_hook_func(lambda t: typing.get_origin(t) is Literal, _literal)

    def _union(value, tp):
        members = typing.get_args(tp)
        if value is None:
            if _NoneType in members:
                return None
            raise _Invalid(f"expected {type_name(tp)}, got None")
        # the member naming the value's own type first: 50 for ``float | int`` stays the int 50
        members = sorted(members, key=lambda m: m is not type(value))
        for member in members:
            if member is _NoneType:
                continue
            try:
                return _structure_value(conv, value, member)
            except (_Invalid, cattrs.BaseValidationError, TypeError, ValueError):
                continue
        raise _Invalid(f"expected {type_name(tp)}, got {_describe(value)}")

    conv.register_structure_hook_func(_is_union, _union)

    def _sequence_guard(value, tp):
        # cattrs would iterate a string into characters; sequences must be real sequences.
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected {type_name(tp)}, got {_describe(value)}")
        origin = typing.get_origin(tp) or tp
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Invalid(f"expected {len(args)} values, got {_describe(value)}")
            return tuple(_structure_value(conv, v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        items = [_structure_value(conv, v, inner) for v in value]
        return tuple(items) if origin is tuple else items

    conv.register_structure_hook_func(
        lambda t: (typing.get_origin(t) or t) in (list, tuple) and t not in (str, bytes), _sequence_guard
    )

    def _dict_guard(value, tp):
        if not isinstance(value, dict):
            raise _Invalid(f"expected {type_name(tp)}, got {_describe(value)}")
        args = typing.get_args(tp) or (Any, Any)
        return {_structure_value(conv, k, args[0]): _structure_value(conv, v, args[1]) for k, v in value.items()}

    conv.register_structure_hook_func(lambda t: (typing.get_origin(t) or t) is dict, _dict_guard)

    def _section(value, cls):
        if isinstance(value, cls):
            return value
        obj, problems = structure_section(cls, value, where="")
        if problems:
            raise _Invalid("; ".join(p.lstrip(": ") for p in problems))
        return obj

    conv.register_structure_hook_func(attrs.has, _section)
    return conv


def _structure_value(conv: cattrs.Converter, value: Any, tp: Any) -> Any:
    try:
        return conv.structure(value, tp)
    except _Invalid:
        raise
    except cattrs.BaseValidationError as exc:
        messages = cattrs.transform_error(exc)
        raise _Invalid("; ".join(messages)) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise _Invalid(f"expected {type_name(tp)}, got {_describe(value)} ({exc})") from None


CONVERTER = _make_converter()


def _tokens(text: str) -> str:
    """Lower-case letter/digit runs, sorted: 'unet2d' and '2d_unet' both give '2dunet'."""
    import re

    return "".join(sorted(re.findall(r"[a-z]+|\d+", text.lower())))


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice (ties go to the first listed), else ''."""
    name = str(name)

    def score(choice: str) -> float:
        return max(difflib.SequenceMatcher(None, name.lower(), choice.lower()).ratio(),
                   difflib.SequenceMatcher(None, _tokens(name), _tokens(choice)).ratio())

    best = max(list(choices), key=score, default=None)
    return f" (did you mean '{best}'?)" if best is not None and score(best) >= 0.6 else ""


def field_types(cls) -> dict[str, Any]:
    """The resolved type annotation of every attrs field of ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in attrs.fields(cls)}


def user_fields(cls) -> list[attrs.Attribute]:
    """Fields a user may set (internal ones carry metadata internal=True)."""
    return [f for f in attrs.fields(cls) if not f.metadata.get("internal")]


def section_type(tp: Any):
    """The attrs section class inside ``tp`` (``Section`` or ``Section | None``), else None."""
    for candidate in (tp, *typing.get_args(tp)):
        if isinstance(candidate, type) and attrs.has(candidate):
            return candidate
    return None


def structure_value(value: Any, tp: Any) -> Any:
    """Structure one value strictly; raises ValueError with a user-facing message."""
    try:
        return _structure_value(CONVERTER, value, tp)
    except _Invalid as exc:
        raise ValueError(str(exc)) from None


def structure_section(cls, values: Any, *, where: str, prefix: str = "",
                      names: dict[str, str] | None = None) -> tuple[Any, list[str]]:
    """Build ``cls`` from a mapping (or accept an instance); return (object or None, problems).

    Each problem reads ``<where>: <prefix><key>: <what>``; all are collected before returning.
    ``names`` maps bioloop keys to what the user wrote (another tool's key, its line), which the
    messages show instead. Cross-field checks run even when some fields are wrong (those fields
    take their defaults for the check, and checks about them are left out).
    """
    from bioloop.config.spellings import display

    names = names or {}

    def show(key: str) -> str:
        return display(names, f"{prefix}{key}")

    if isinstance(values, cls):
        return values, []
    unwrap = getattr(cls, "unwrap_settings", None)
    if callable(unwrap):  # a section may accept another spelling of itself (e.g. {name: {...}})
        values = unwrap(values)
    label = f"{where}: {display(names, prefix.rstrip('.'))}" if prefix else where
    if not isinstance(values, dict):
        return None, [f"{label}: expected a {cls.__name__} or a dict, got {_describe(values)}"]
    fields = {f.name: f for f in user_fields(cls)}
    types = field_types(cls)
    problems: list[str] = []
    kwargs: dict[str, Any] = {}
    failed: set[str] = set()
    for key, value in values.items():
        if not isinstance(key, str) or key not in fields:
            hint = did_you_mean(str(key), fields) or (
                "; name helper variables with a leading '_'" if not prefix else
                f"; known keys: {', '.join(fields)}")
            problems.append(f"{where}: unknown setting '{show(key)}'{hint}")
            continue
        field = fields[key]
        tp = types[key]
        section = section_type(tp)
        try:
            if section is not None and isinstance(value, dict):
                obj, sub = structure_section(section, value, where=where, prefix=f"{prefix}{key}.", names=names)
                if sub:
                    problems.extend(sub)
                    failed.add(key)
                    continue
                converted = obj
            else:
                converted = structure_value(value, tp)
        except ValueError as exc:
            problems.append(f"{where}: {show(key)}: {exc}")
            failed.add(key)
            continue
        if field.validator is not None:
            try:
                field.validator(None, field, converted)
            except (ValueError, TypeError) as exc:
                problems.append(f"{where}: {show(key)}: {_validator_message(exc, converted)}")
                failed.add(key)
                continue
        kwargs[key] = converted
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        return None, problems or [f"{label}: {exc}"]
    check = getattr(obj, "check", None)
    if callable(check):
        for msg in check():
            key, sep, rest = msg.partition(":")
            if sep and " " not in key:
                if key.split(".")[0] in failed:
                    continue  # about a field already reported: its default stood in for the check
                msg = f"{show(key)}:{rest}"
            problems.append(f"{where}: {msg}" if not prefix or sep and " " not in key else f"{where}: {prefix}{msg}")
    return (None if problems else obj), problems


def _validator_message(exc: Exception, value: Any) -> str:
    args = exc.args
    # attrs' built-in validators raise (message, attribute, bound, value): keep only the human part.
    if len(args) >= 4 and isinstance(args[0], str):
        msg = args[0]
        if msg.startswith("'"):
            msg = msg.split(" ", 1)[1] if " " in msg else msg
        return f"{msg}"
    return str(exc)
