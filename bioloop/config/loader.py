"""Load a user's Python config file into a validated, task-specific settings object.

The file runs as a real module (its own ``__file__``, its folder on sys.path while it
runs, line numbers intact). Its public names are settings; modules, and classes or
functions that are imported or defined under their own name, are helpers. Everything
else the schema does not know is an error with a did-you-mean; all problems are
reported together, each naming the file and the key.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
import traceback
import types
import uuid
from pathlib import Path
from typing import Any, Iterable

import attrs

from bioloop.config.structure import did_you_mean, field_types, section_type, structure_section, structure_value, user_fields
from bioloop.errors import ConfigError, ConfigExecutionError


@attrs.frozen
class ConfigSource:
    """Where a config came from: the file, its bytes' hash and the overrides applied."""

    path: Path | None
    sha256: str
    overrides: tuple[str, ...] = ()
    given: tuple[str, ...] = ()  # top-level settings the file or an override set
    spelling: str | None = None  # the other tool whose spelling the file uses (e.g. "Lightning Pose")
    notes: tuple[str, ...] = ()  # what a mapping of another tool's key did differently
    names: tuple[tuple[str, str], ...] = ()  # (bioloop key, the user's key and line) for messages

    @property
    def name(self) -> str:
        return self.path.name if self.path else "<settings>"


def run_config_file(path: Path) -> dict[str, Any]:
    """Execute the config file as a module and return its namespace."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError.at(str(path), "config file not found", fix="check the path")
    module_name = f"bioloop_user_config_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError.at(str(path), "cannot be loaded as a Python module", fix="give a .py file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigExecutionError(
            f"{path}: line {exc.lineno}: syntax error: {exc.msg}",
            "".join(traceback.format_exception_only(type(exc), exc)),
        ) from None
    except Exception as exc:  # the user's own code failed: show their traceback, not ours
        raise ConfigExecutionError(
            f"{path}: the config file raised {type(exc).__name__}: {exc}", _user_traceback(exc, path)
        ) from None
    finally:
        sys.modules.pop(module_name, None)
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return dict(vars(module))


def _user_traceback(exc: BaseException, path: Path) -> str:
    """The traceback from the first frame inside the user's file on."""
    tb = exc.__traceback__
    target = str(path.resolve())
    while tb is not None and str(Path(tb.tb_frame.f_code.co_filename).resolve()) != target:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def public_settings(namespace: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """Pick the names that are settings: public, and not helpers (modules, defs, imports)."""
    known = set(known)
    settings = {}
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType):
            continue
        if name not in known and (inspect.isclass(value) or inspect.isroutine(value)):
            # `def helper():` / `from x import Helper` bind a callable under its own name: a helper.
            # `optimiser = torch.optim.AdamW` binds it under another name: that is meant as a setting.
            if getattr(value, "__name__", None) == name:
                continue
        settings[name] = value
    return settings


def parse_override(text: str) -> tuple[str, str]:
    """Split ``key=value`` from the command line."""
    if "=" not in text:
        raise ConfigError.at("command line", "override must look like key=value", got=text)
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError.at("command line", "override has no key", got=text)
    return key, value


def _literal(text: str) -> Any:
    """Read an override value: Python literals, true/false/none words, else the raw string."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(schema, settings: dict[str, Any], overrides: Iterable[str]) -> list[str]:
    """Apply ``key=value`` overrides (dotted keys reach into sections) in place; return problems."""
    problems = []
    for text in overrides:
        try:
            key, raw = parse_override(text)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        parts = key.split(".")
        cls, target = schema, settings
        where = f"command line -s {text}"
        for depth, part in enumerate(parts):
            names = {f.name for f in user_fields(cls)}
            if part not in names:
                problems.append(f"{where}: unknown setting '{'.'.join(parts[:depth + 1])}'{did_you_mean(part, names)}")
                break
            tp = field_types(cls)[part]
            if depth == len(parts) - 1:
                value = _literal(raw)
                if _wants_string(tp) and not _looks_quoted(raw) and not (value is None and _allows_none(tp)):
                    value = raw
                try:
                    structure_value(value, tp)
                except ValueError as exc:
                    problems.append(f"{where}: {key}: {exc}")
                    break
                target[part] = value
                break
            section_cls = section_type(tp)
            if section_cls is None:
                current = target.get(part, _field_default(cls, part))
                if isinstance(current, dict):  # a spec dict ({"type": ..., "params": {...}}): edit a copy
                    node = target[part] = dict(current)
                    for sub in parts[depth + 1:-1]:
                        child = node.get(sub)
                        node[sub] = dict(child) if isinstance(child, dict) else {}
                        node = node[sub]
                    node[parts[-1]] = _literal(raw)
                    break
                hint = ""
                if part in ("optimizer", "scheduler"):
                    hint = (f"; {part} is {current!r} here, so give the whole spec, e.g. -s {part}="
                            "\"{'type': 'AdamW', 'params': {'lr': 1e-3}}\"" +
                            (" (or -s learning_rate=... for the default optimizer)" if part == "optimizer" else ""))
                problems.append(f"{where}: '{'.'.join(parts[:depth + 1])}' is not a section{hint}")
                break
            current = target.get(part)
            if current is None:
                current = _section_default(cls, part)
            elif attrs.has(type(current)):
                current = {f.name: getattr(current, f.name) for f in user_fields(type(current))}
            elif isinstance(current, dict):
                current = dict(current)
            target[part] = current
            cls, target = section_cls, current
    return problems


def _field_default(cls, name: str):
    field = attrs.fields_dict(cls)[name]
    return field.default.factory() if isinstance(field.default, attrs.Factory) else field.default


def _section_default(cls, name: str) -> dict:
    """A section's default values as a dict ({} when the section defaults to None)."""
    field = attrs.fields_dict(cls)[name]
    default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
    if default is None or default is attrs.NOTHING:
        return {}
    return {f.name: getattr(default, f.name) for f in user_fields(type(default))}


def _wants_string(tp) -> bool:
    import typing

    if typing.get_origin(tp) in (list, tuple, dict, set):
        return False
    args = typing.get_args(tp) or (tp,)
    return str in args and not any(a in (int, float, bool, list, dict) for a in args)


def _allows_none(tp) -> bool:
    import typing

    return type(None) in typing.get_args(tp)


def _looks_quoted(text: str) -> bool:
    text = text.strip()
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""


def resolve_paths(cfg, base: Path):
    """Anchor relative path settings at ``base`` (the config file's folder), recursively."""
    changes = {}
    for field in user_fields(type(cfg)):
        value = getattr(cfg, field.name)
        if value is None:
            continue
        if field.metadata.get("path"):
            changes[field.name] = _anchor(value, base)
        elif attrs.has(type(value)):
            changes[field.name] = resolve_paths(value, base)
    return attrs.evolve(cfg, **changes) if changes else cfg


def _anchor(value, base: Path):
    if isinstance(value, (list, tuple)):
        return type(value)(_anchor(v, base) for v in value)
    text = str(value)
    if "://" in text:
        return value  # a URL (s3://...) stays as written
    path = Path(text).expanduser()
    anchored = path if path.is_absolute() else (base / path).resolve()
    return anchored if isinstance(value, Path) else str(anchored)


def _spelled(schema, settings: dict, overrides, *, where: str, lines, whole_file: bool):
    """Translate another tool's spelling (file and ``-s`` keys in it); return (translation, our overrides)."""
    from bioloop.config.spellings import detect, set_dotted, translate

    tables, ambiguous = schema.spelling_tables() if hasattr(schema, "spelling_tables") else ((), ())
    ours = [f.name for f in user_fields(schema)]
    table, _ = detect(settings, tables, where=where) if tables else (None, [])
    foreign = table.foreign_sections(settings, whole_file=whole_file) if table else set()
    source, origins, remaining = dict(settings), {}, []
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        top = key.split(".")[0]
        owners = [t for t in ([table] if table else tables) if top in t.sections]
        if "=" in text and owners and (top not in ours or top in foreign):
            set_dotted(source, key, _literal(text.split("=", 1)[1]))
            origins[key] = f"command line -s {text}"
            if table is None:
                table = owners[0] if len(owners) == 1 or owners[0].row_for(key)[0] else None
        else:
            remaining.append(text)
    if not tables:
        return None, remaining
    result = translate(source, tables, where=where, lines=lines, whole_file=whole_file, origins=origins,
                       ambiguous=ambiguous, table=table)
    return result, remaining


def build_config(settings: dict[str, Any], *, where: str, base: Path, overrides: Iterable[str] = (), source=None,
                 lines: dict[str, int] | None = None, whole_file: bool = False):
    """Validate a settings mapping against its task's schema and return the config object.

    ``settings`` may use another tool's spelling (the task's tables in ``spelling_tables``); ``lines``
    gives the line of each dotted key for messages; ``whole_file`` says every section of it is in
    that tool's spelling (its own YAML file).
    """
    from bioloop.tasks import get_task_config

    overrides = tuple(overrides)
    settings = dict(settings)
    task_name = settings.get("task", "segmentation")
    for text in overrides:  # a task override decides the schema
        if text.split("=", 1)[0].strip() == "task" and "=" in text:
            task_name = _literal(text.split("=", 1)[1])
    schema = get_task_config(task_name, where=where)
    translation, overrides = _spelled(schema, settings, overrides, where=where, lines=lines, whole_file=whole_file)
    names: dict[str, str] = {}
    problems: list[str] = []
    if translation is not None:
        settings, names = dict(translation.values), translation.names
        problems.extend(translation.problems)
    if whole_file and (translation is None or translation.tool is None) and not problems:
        tools = ", ".join(t.tool for t in (schema.spelling_tables()[0] if hasattr(schema, "spelling_tables") else ()))
        problems.append(f"{where}: not recognised as a {tools or 'known tool'}'s config file (none of their "
                        "identifying keys is present); write a bioloop Python config (`bioloop init`)")
    problems.extend(apply_overrides(schema, settings, overrides))
    if source is not None:
        source = attrs.evolve(source, given=tuple(settings),
                              spelling=translation.tool if translation is not None else None,
                              notes=translation.notes if translation is not None else (),
                              names=tuple(names.items()))
    cfg, more = structure_section(schema, settings, where=where, names=names)
    problems.extend(more)
    if problems:
        raise ConfigError.many(sorted(set(problems), key=problems.index))
    cfg = resolve_paths(cfg, base)
    return attrs.evolve(cfg, source=source)


def _task_of_yaml(data: dict, path: Path) -> str:
    """The task whose tools' spelling a YAML file uses (its ``task`` key, else told by its keys)."""
    from bioloop.tasks import TASKS, get_task_config

    if "task" in data:
        return data["task"]
    scores = []
    for name in TASKS:
        schema = get_task_config(name, where=str(path))
        tables = schema.spelling_tables()[0] if hasattr(schema, "spelling_tables") else ()
        for table in tables:
            evidence = table.evidence(data)
            if evidence:
                scores.append((len(evidence), name, table.tool))
    scores.sort(reverse=True)
    if not scores:
        raise ConfigError.at(str(path), "not recognised as a Lightning Pose, DeepLabCut or DREEM/GTR config",
                             got=sorted(data)[:8], fix="add `task: pose` or `task: tracking`, or write a bioloop "
                             "Python config (`bioloop init`)")
    if len(scores) > 1 and scores[0][0] == scores[1][0] and scores[0][1] != scores[1][1]:
        raise ConfigError.at(str(path), f"reads as both a {scores[0][2]} and a {scores[1][2]} config",
                             fix="add `task: pose` or `task: tracking`")
    return scores[0][1]


def load_settings(path, overrides: Iterable[str] = ()):
    """(settings mapping, lines, whole_file, task name) of a config file, before validation."""
    from bioloop.config.sources import YAML_SUFFIXES, python_lines, read_yaml
    from bioloop.tasks import get_task_config

    path = Path(path)
    if path.suffix.lower() in YAML_SUFFIXES:
        if not path.is_file():
            raise ConfigError.at(str(path), "config file not found", fix="check the path")
        data, lines = read_yaml(path)
        task_name = _task_of_yaml(data, path)
        settings = {"task": task_name, **data}
        whole_file = True
    else:
        namespace = run_config_file(path)
        task_name = namespace.get("task", "segmentation")
        lines, whole_file = python_lines(path), False
        settings = None
    for text in overrides:
        if text.split("=", 1)[0].strip() == "task" and "=" in text:
            task_name = _literal(text.split("=", 1)[1])
    if settings is None:
        schema = get_task_config(task_name, where=f"{path}: task")
        known = {f.name for f in user_fields(schema)}
        settings = public_settings(namespace, known)
    return settings, lines, whole_file, task_name


def load_config(path, overrides: Iterable[str] = (), *, echo=None):
    """Read a config file (bioloop's Python, or another tool's YAML) and return its validated settings.

    ``cfg.source`` tells where it came from; notes about another tool's keys (what bioloop does
    differently) go to ``echo`` (stderr by default), one line each.
    """
    path = Path(path)
    settings, lines, whole_file, _ = load_settings(path, overrides)
    digest = hashlib.sha256(path.read_bytes() + "\n".join(overrides).encode()).hexdigest()
    source = ConfigSource(path=path.resolve(), sha256=digest, overrides=tuple(overrides))
    cfg = build_config(settings, where=str(path), base=path.resolve().parent, overrides=overrides, source=source,
                       lines=lines, whole_file=whole_file)
    say = echo or (lambda message: print(message, file=sys.stderr))
    for note in cfg.source.notes:
        say(f"note: {note}")
    return cfg
