"""Other tools' spellings of a config, mapped onto bioloop's settings by one declarative table each.

A :class:`Table` lists :class:`Row` s: a dotted key as the other tool writes it (``trainer.max_epochs``)
-> the bioloop setting it means (``epochs``), with an optional converter where the value changes form or
the meanings need arithmetic. :func:`translate` walks a settings mapping (a YAML file or a Python
config's names), finds which tool's spelling it uses from the keys it holds, and returns bioloop's
settings plus, for every bioloop key it wrote, the user's own key and line, so that a later error
names what the user wrote. A key without a row is reported with its dotted path, never dropped; a
row that has no effect here accepts only the values that make it so (a printed note says what bioloop
does instead where that matters).

Row kinds:

- ``Row("trainer.max_epochs", "epochs")`` — same meaning, the value as written;
- ``Row("a.b", "x", convert=f)`` — ``f(value, ctx)`` returns the bioloop value, or raises
  :class:`Unsupported` with what to do instead;
- ``Row("a.b", None, convert=f)`` — ``f`` returns ``{bioloop key: value, ...}`` (several settings, or
  none);
- ``Row("a.b", accept=(v1, v2))`` — no effect here, and only these values are accepted (``ANY``: any);
- ``default=`` — the reference's default, written when the row's section is given without this key
  (Lightning's ``EarlyStopping`` patience is 3, bioloop's 10);
- ``requires="early_stopping"`` — written only when that bioloop section ends up set (Lightning's
  ``min_epochs`` only delays early stopping; without it nothing stops early).

``source`` may end in ``.*`` (every key below, ``target`` ending in ``.*`` receives the same rest);
the most specific row wins.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

ANY = "<any value>"


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_NOTHING = _Unset()


class Unsupported(ValueError):
    """A value that has no counterpart in bioloop; the message says what to do instead."""


@attrs.frozen
class Row:
    """One key of another tool's config and the bioloop setting it means."""

    source: str
    target: str | None = None
    convert: Callable[[Any, "Context"], Any] | None = None
    accept: Any = ANY
    default: Any = _NOTHING
    requires: str | None = None
    note: str = ""
    meaning: str = ""


@attrs.frozen
class Table:
    """One tool's spelling: its rows, the keys that identify it, and the sections bioloop shares.

    ``markers`` are dotted keys (``"model.backbone:dict"`` also checks the value's type) whose presence
    says a mapping uses this tool's spelling. ``shared`` names top-level keys bioloop has too (with
    its own meaning): such a section is read in the tool's spelling only when it holds one of the
    listed keys (or the file is the tool's own YAML); otherwise it is bioloop's.
    """

    tool: str
    rows: tuple[Row, ...]
    markers: tuple[str, ...]
    shared: dict[str, tuple[str, ...]] = attrs.field(factory=dict)

    @property
    def sections(self) -> set[str]:
        return {r.source.split(".")[0] for r in self.rows}

    def evidence(self, values: dict) -> list[str]:
        found = []
        for marker in self.markers:
            key, _, kind = marker.partition(":")
            present, value = _lookup(values, key)
            if present and (not kind or type(value).__name__ == kind):
                found.append(key)
        return found

    def foreign_sections(self, values: dict, *, whole_file: bool) -> set[str]:
        """Top-level keys of ``values`` that this table reads (rather than bioloop's own schema)."""
        out = set()
        for key in self.sections:
            if key not in values:
                continue
            if key not in self.shared or whole_file:
                out.add(key)
            elif isinstance(values[key], dict) and any(k in values[key] for k in self.shared[key]):
                out.add(key)
        return out

    def row_for(self, path: str) -> tuple[Row | None, str]:
        """The most specific row matching ``path`` and the rest a wildcard matched ('' if exact)."""
        best, rest = None, ""
        for row in self.rows:
            if row.source == path:
                return row, ""
            if row.source.endswith(".*") and path.startswith(row.source[:-1]):
                if best is None or len(row.source) > len(best.source):
                    best, rest = row, path[len(row.source) - 1:]
        return best, rest

    def has_rows_below(self, path: str) -> bool:
        return any(r.source.startswith(path + ".") for r in self.rows)


@attrs.define
class Context:
    """What a converter may read: the other keys of the file (dotted), and where to leave a note."""

    values: dict
    notes: list[str]
    label: str = ""

    def get(self, key: str, default=None):
        present, value = _lookup(self.values, key)
        return value if present else default

    def has(self, key: str) -> bool:
        return _lookup(self.values, key)[0]

    def note(self, text: str) -> None:
        self.notes.append(f"{self.label}: {text}")


@attrs.frozen
class Translation:
    """Bioloop's settings from another spelling: values, user labels per bioloop key, notes, problems."""

    values: dict
    names: dict[str, str]
    notes: tuple[str, ...]
    problems: tuple[str, ...]
    tool: str | None
    rejected: tuple[str, ...] = ()  # source keys behind the problems


def _lookup(values, key: str):
    node = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def set_dotted(values: dict, key: str, value) -> None:
    """Write ``value`` at a dotted key, turning attrs sections on the way into dicts."""
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if attrs.has(type(child)):
            child = {f.name: getattr(child, f.name) for f in attrs.fields(type(child))
                     if not f.metadata.get("internal")}
        elif isinstance(child, dict):
            child = dict(child)
        else:
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def detect(values: dict, tables, *, where: str, ambiguous: tuple[str, ...] = ()):
    """(the table whose spelling ``values`` use or None, problems)."""
    found = [(t, t.evidence(values)) for t in tables]
    found = [(t, e) for t, e in found if e]
    if len(found) > 1:
        parts = " and ".join(f"{t.tool} keys ({', '.join(e)})" for t, e in found)
        return None, [f"{where}: the settings mix {parts}; a config follows one tool's spelling (or "
                      "bioloop's own), so keep the keys of one"]
    if found:
        return found[0][0], []
    for key in ambiguous:
        if isinstance(values.get(key), dict):
            tools = " or ".join(t.tool for t in tables)
            return None, [f"{where}: {key}: a dict that is not clearly {tools} (got keys "
                          f"{sorted(values[key])}); bioloop's own '{key}' is a ready torch module, so write the "
                          "section in one tool's spelling, with its identifying keys"]
    return None, []


def translate(values: dict, tables, *, where: str, lines: dict[str, int] | None = None,
              whole_file: bool = False, origins: dict[str, str] | None = None,
              ambiguous: tuple[str, ...] = (), table: Table | None = None) -> Translation:
    """Map ``values`` written in one of ``tables``' spellings onto bioloop's settings.

    ``lines`` gives the line of each dotted source key (YAML files, Python sources); ``origins`` labels
    keys that did not come from the file (command-line overrides). Keys of bioloop's own spelling pass
    through unchanged.
    """
    lines = lines or {}
    origins = dict(origins or {})
    from_cli = set(origins)  # keys the command line set: they win over the file
    if table is None:
        table, problems = detect(values, tables, where=where, ambiguous=ambiguous)
        if problems:
            return Translation(dict(values), {}, (), tuple(problems), None)
    if table is None:
        return Translation(dict(values), {}, (), (), None)
    rejected: list[str] = []

    def label(path: str) -> str:
        if path in origins:
            return origins[path]
        line = lines.get(path)
        return f"line {line}: {path}" if line else path

    foreign = table.foreign_sections(values, whole_file=whole_file)
    notes: list[str] = []
    problems: list[str] = []
    ctx = Context(values, notes)
    assignments: list[tuple[str, Any, str, Row]] = []  # (bioloop key, value, source path, row)

    def walk(path: str, value) -> None:
        row, rest = table.row_for(path)
        if row is not None and (not rest or not (isinstance(value, dict) and table.has_rows_below(path))):
            apply(row, rest, path, value)
            return
        if isinstance(value, dict) and (table.has_rows_below(path) or row is not None):
            for key, inner in value.items():
                walk(f"{path}.{key}", inner)
            return
        if value is None and table.has_rows_below(path):
            return  # an empty section (YAML `runner:` with nothing under it)
        top = path.split(".")[0]
        if top in table.shared and not whole_file:
            assignments.append((path, value, path, None))  # bioloop's own key inside a shared section
            return
        rejected.append(path)
        problems.append(f"{where}: {label(path)}: {table.tool}'s setting has no counterpart in bioloop "
                        f"(got {value!r}); remove it, or see docs/configuration.md for bioloop's settings")

    def apply(row: Row, rest: str, path: str, value) -> None:
        ctx.label = f"{where}: {label(path)}"
        target = row.target
        if target is not None and target.endswith(".*"):
            target = target[:-1] + rest.lstrip(".")
        try:
            if row.convert is not None:
                result = row.convert(value, ctx)
            else:
                result = value
                if target is None and row.accept is not ANY and not any(
                        value == ok and type(value) is type(ok) for ok in row.accept):
                    shown = ", ".join(repr(a) for a in row.accept)
                    raise Unsupported(f"bioloop supports only {shown} here ({row.meaning or 'no counterpart'})")
                if target is None:
                    result = {}  # accepted without effect
        except Unsupported as exc:
            rejected.append(path)
            problems.append(f"{where}: {label(path)}: {exc} (got {value!r})")
            return
        if row.note:
            notes.append(f"{where}: {label(path)}: {row.note}")
        if target is None:
            for key, val in (result or {}).items():
                assignments.append((key, val, path, row))
        else:
            assignments.append((target, result, path, row))

    out: dict = {}
    native: dict[str, str] = {}
    defaulted: set[str] = set()
    for key, value in values.items():
        if key in foreign:
            walk(key, value)
        else:
            out[key] = value
            native[key] = key
    for row in table.rows:  # the reference's defaults for keys a given section leaves out
        if row.default is _NOTHING or row.source.split(".")[0] not in foreign:
            continue
        parent = row.source.rsplit(".", 1)[0]
        if _lookup(values, parent)[0] and not _lookup(values, row.source)[0]:
            origins.setdefault(row.source, f"{table.tool}'s default {row.source}={row.default!r}")
            defaulted.add(row.source)
            apply(row, "", row.source, row.default)
    names: dict[str, str] = {k: label(k) for k in lines if k.split(".")[0] in native}
    written: dict[str, str] = {}
    for key, value, source, row in assignments:
        if row is not None and row.requires and not _present(out, assignments, row.requires):
            notes.append(f"{where}: {label(source)}: no effect, since no {row.requires} section is set "
                         f"(as in {table.tool}, where it only matters together with it)")
            continue
        present, existing = _lookup(out, key)
        owner = written.get(key) or native.get(key.split(".")[0])
        if present and owner and existing != value and (
                (source in from_cli) != (owner in from_cli) or source in defaulted):
            if owner in from_cli or source in defaulted:
                continue  # a command-line override wins over the file, anything over a default
        elif present and owner and existing != value:
            problems.append(f"{where}: {label(source)} and {label(owner)} both set bioloop's '{key}' "
                            f"(got {value!r} and {existing!r}); keep one of them")
            continue
        set_dotted(out, key, value)
        written[key] = source
        names[key] = label(source)
    return Translation(out, names, tuple(notes), tuple(problems), table.tool, tuple(rejected))


def _present(out: dict, assignments, section: str) -> bool:
    if out.get(section) is not None:
        return True
    return any((k == section or k.startswith(section + ".")) and not (row is not None and row.requires == section)
               for k, _, _, row in assignments)


def display(names: dict[str, str], key: str) -> str:
    """The user's label for bioloop key ``key``: the longest translated prefix, rest appended."""
    probe = key
    while probe:
        if probe in names:
            rest = key[len(probe):]
            return names[probe] + rest
        probe = probe.rpartition(".")[0]
    return key


def describe(tables) -> list[dict]:
    """Rows as plain data (for docs and tests)."""
    return [{"tool": t.tool, "source": r.source, "target": r.target, "meaning": r.meaning} for t in tables
            for r in t.rows]
