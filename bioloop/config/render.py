"""`bioloop init --from their.yaml my.py`: another tool's config written as an annotated bioloop Python config.

Each setting the file gives becomes one assignment, commented with its meaning (the schema's doc) and
the key and line it came from. Relative paths are anchored at the source file's folder, so the new
file works wherever it is written. The result is loaded back before it is returned.
"""

from __future__ import annotations

import ast
import pprint
from pathlib import Path

from bioloop.errors import ConfigError


def _literal(value) -> str | None:
    text = pprint.pformat(value, width=96, sort_dicts=False)
    try:
        return text if ast.literal_eval(text) == value else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def python_config(source: Path) -> str:
    """The text of a bioloop Python config equivalent to ``source`` (a Lightning Pose/DeepLabCut/GTR YAML)."""
    import attrs

    from bioloop.config.loader import _spelled, build_config, load_settings
    from bioloop.config.structure import user_fields
    from bioloop.tasks import get_task_config

    source = Path(source)
    settings, lines, whole_file, task = load_settings(source)
    schema = get_task_config(task, where=str(source))
    translation, _ = _spelled(schema, settings, (), where=str(source), lines=lines, whole_file=whole_file)
    build_config(settings, where=str(source), base=source.resolve().parent, lines=lines, whole_file=whole_file)
    fields = {f.name: f for f in user_fields(schema)}
    base = source.resolve().parent
    out = [f'"""bioloop config written by `bioloop init --from {source.name}`'
           f" ({translation.tool}'s spelling, {source}).",
           "", "Each setting names the key it came from; see docs/configuration.md for every setting.", '"""', ""]
    imports = set()
    body = []
    for key, value in translation.values.items():
        field = fields.get(key)
        if field is not None and field.metadata.get("path") and isinstance(value, str) and "://" not in value \
                and not Path(value).is_absolute():
            value = str((base / value).resolve())
        origins = sorted({label for k, label in translation.names.items() if k == key or k.startswith(key + ".")})
        doc = field.metadata.get("doc", "") if field is not None else ""
        comment = "; ".join(x for x in (doc, f"from {', '.join(origins)}" if origins else "") if x)
        text = _literal(value)
        if text is None and key == "imgaug" and isinstance(settings.get("data"), dict):
            train = {k: v for k, v in dict(settings["data"].get("train") or {}).items() if k != "collate"}
            imports.add("from bioloop.tasks.pose.augment_dlc import dlc_augmentation")
            text = f"dlc_augmentation({pprint.pformat(train, width=80, sort_dicts=False)})"
        if text is None:
            raise ConfigError.at(f"{source}: {', '.join(origins) or key}", "cannot be written as Python source",
                                 got=type(value).__name__, fix="write this setting into the new file by hand")
        if comment:
            body.append(f"# {comment}")
        body.append(f"{key} = {text}")
    for name, field in fields.items():  # defaults relative to the config's folder: keep them at the source's
        default = field.default
        if not field.metadata.get("path") or name in translation.values or not isinstance(default, (str, Path)) \
                or Path(default).is_absolute():
            continue
        body.append(f"# {field.metadata.get('doc', '')}; the default ({str(default)!r}) next to {source.name}")
        body.append(f"{name} = {str((base / default).resolve())!r}")
    for note in translation.notes:
        body.append(f"# note: {note}")
    text = "\n".join(out + sorted(imports) + ([""] if imports else []) + body) + "\n"
    del attrs
    return text


def write_python_config(source: Path, dest: Path) -> Path:
    """Write :func:`python_config` of ``source`` to ``dest`` (never over an existing file) and check it loads."""
    from bioloop.config.loader import load_config

    dest = Path(dest)
    if dest.exists():
        raise ConfigError.at(str(dest), "already exists; nothing was written", fix="choose another destination")
    text = python_config(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    load_config(dest, echo=lambda _message: None)
    return dest
