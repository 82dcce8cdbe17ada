"""Turn a settings object into plain data (for YAML/JSON records, checkpoints, `config show`)."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import attrs

from bioloop.config.structure import user_fields


def import_path(obj: Any) -> str:
    """'package.module.Name' of a class, function or an object's class."""
    target = obj if (inspect.isclass(obj) or inspect.isroutine(obj)) else type(obj)
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    if module.startswith("bioloop_user_config_"):
        module = "<config>"
    return f"{module}.{name}"


def _short_repr(obj: Any, limit: int = 300) -> str:
    text = repr(obj)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_plain(value: Any) -> Any:
    """Plain str/int/float/bool/None/list/dict; live objects become {type, repr}."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Path):
        return str(value)
    if attrs.has(type(value)):
        return {f.name: to_plain(getattr(value, f.name)) for f in user_fields(type(value))}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if inspect.isclass(value) or inspect.isroutine(value):
        return {"type": import_path(value)}
    return {"type": import_path(value), "repr": _short_repr(value)}


def settings_table(cfg) -> list[tuple[str, Any, bool]]:
    """(name, plain value, set-by-the-user) for every user setting."""
    given = set(getattr(cfg.source, "given", ()) or ()) if getattr(cfg, "source", None) else None
    rows = []
    for field in user_fields(type(cfg)):
        value = getattr(cfg, field.name)
        if given is not None:
            changed = field.name in given
        else:
            default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
            changed = to_plain(value) != to_plain(default)
        rows.append((field.name, to_plain(value), changed))
    return rows


def format_settings(cfg) -> str:
    """Readable `name = value` lines; non-default values are marked with '*'."""
    import yaml

    lines = []
    for name, plain, changed in settings_table(cfg):
        text = yaml.safe_dump(plain, default_flow_style=True, width=10_000).strip()
        if text.endswith("..."):
            text = text[:-3].strip()
        lines.append(f"{'*' if changed else ' '} {name} = {text}")
    return "\n".join(lines)
