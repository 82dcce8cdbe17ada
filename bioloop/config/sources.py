"""Where each key of a config file was written: YAML files (other tools' configs) and Python sources.

``read_yaml`` returns the mapping and the line of every dotted key; ``python_lines`` finds the line
of each key a Python config assigns at module level, inside dict literals too
(``trainer = {"max_epochs": 10}`` gives ``trainer.max_epochs``), so messages can point at it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from bioloop.errors import ConfigError

YAML_SUFFIXES = (".yaml", ".yml")


def read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """(mapping, {dotted key: line}) of a YAML file; a syntax error names its line."""
    import yaml

    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}: line {mark.line + 1}" if mark is not None else str(path)
        raise ConfigError.at(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                             fix="fix the file's syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError.at(str(path), "a config file must be a mapping of settings", got=type(data).__name__,
                             fix="write `key: value` lines at the top level")
    lines: dict[str, int] = {}

    def walk(n, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                name = f"{prefix}{key.value}"
                lines[name] = key.start_mark.line + 1
                walk(value, name + ".")

    walk(node, "")
    return data, lines


def python_lines(path: Path) -> dict[str, int]:
    """{dotted key: line} for module-level assignments of a Python config (best effort)."""
    try:
        tree = ast.parse(Path(path).read_text())
    except (SyntaxError, ValueError, OSError):
        return {}
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    lines[f"{prefix}{key.value}"] = key.lineno
                    walk(value, f"{prefix}{key.value}.")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            for kw in node.keywords:
                if kw.arg:
                    lines[f"{prefix}{kw.arg}"] = kw.value.lineno
                    walk(kw.value, f"{prefix}{kw.arg}.")

    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
            stmt, ast.AnnAssign) and stmt.value is not None else []
        for target in targets:
            if isinstance(target, ast.Name):
                lines[target.id] = stmt.lineno
                walk(stmt.value, target.id + ".")
    return lines
