"""The generated configuration reference is current and complete; README links resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import attrs

from bioloop.config.structure import field_types, section_type, user_fields

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "tools" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dotted_fields(cls, prefix: str = "") -> list[str]:
    names = []
    types = field_types(cls)
    for field in user_fields(cls):
        names.append(prefix + field.name)
        section = section_type(types[field.name])
        if section is not None:
            names += _dotted_fields(section, f"{prefix}{field.name}.")
    return names


def test_configuration_md_is_current():
    rendered = _gen_module().render()
    on_disk = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert rendered == on_disk, "docs/configuration.md is stale; run `make docs`"


def test_render_is_deterministic():
    gen = _gen_module()
    assert gen.render() == gen.render()


def test_every_segmentation_setting_is_documented():
    from bioloop.tasks import get_task

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([\w.]+)` \|", text, flags=re.M))
    schema = get_task("segmentation").Config
    names = _dotted_fields(schema)
    # a section class documented once; later fields of the same class point at its table
    shared_section = {n for n in names if n.startswith("target_array_info.")} if "Same fields as" in text else set()
    missing = [name for name in names if name not in rows and name not in shared_section]
    assert not missing, f"not in docs/configuration.md: {missing}"
    assert "source" not in rows  # internal fields stay out


@attrs.frozen(kw_only=True)
class _Inner:
    a: int = attrs.field(default=1, metadata={"doc": "a"})


@attrs.frozen(kw_only=True)
class _Demo:
    folder: Path = attrs.field(default=Path("runs/x"), metadata={"doc": "", "path": True})
    table: dict = attrs.field(factory=lambda: {"k": [1, 2]}, metadata={"doc": ""})
    inner: _Inner = attrs.field(factory=_Inner, metadata={"doc": ""})
    changed: _Inner = attrs.field(factory=lambda: _Inner(a=2), metadata={"doc": ""})
    needed: int = attrs.field(metadata={"doc": ""})
    nothing: int | None = attrs.field(default=None, metadata={"doc": "x | y"})


def test_defaults_render_as_users_write_them():
    gen = _gen_module()
    fields = attrs.fields_dict(_Demo)
    assert gen.render_default(fields["folder"]) == "`'runs/x'`"  # a path as written
    assert gen.render_default(fields["table"]) == "`{'k': [1, 2]}`"  # factories are called, dicts compact
    assert gen.render_default(fields["inner"]) == "*section defaults*"
    assert gen.render_default(fields["changed"]) == "`{'a': 2}`"
    assert gen.render_default(fields["needed"]) == "*required*"
    assert gen.render_default(fields["nothing"]) == "`None`"


def test_table_escapes_pipes_and_marks_paths():
    gen = _gen_module()
    rows = gen._table(_Demo, ["folder", "nothing"])
    assert rows[2].startswith("| `folder` | `Path` | `'runs/x'` |") and "relative to the config file's folder" in rows[2]
    assert rows[3] == "| `nothing` | `int \\| None` | `None` | x \\| y |"


def test_check_flag_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    gen = _gen_module()
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(gen, "OUTPUT", stale)
    assert gen.main(["--check"]) == 1
    assert "docs/configuration.md is stale; run `make docs`" in capsys.readouterr().err
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0


def test_groups_follow_the_schema_comments():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    headings = re.findall(r"^### (.+)$", text, flags=re.M)
    shared = ["Task and model", "Optimisation", "Validation and selection", "Files", "Runtime"]
    assert headings[: len(shared)] == shared
    assert text.index("### Runtime") < text.index("## Task `segmentation`")


def test_docs_linked_from_readme_exist():
    readme = ROOT / "README.md"
    if readme.exists():
        links = re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", readme.read_text(encoding="utf-8"))
        missing = [link for link in links if not (ROOT / link).is_file()]
        assert not missing, f"README.md links to missing files: {missing}"


def test_links_between_docs_resolve():
    for page in DOCS.glob("*.md"):
        for link in re.findall(r"\]\(([^)#\s:]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / link).is_file(), f"{page.name} links to missing {link}"


def test_configuration_anchors_exist():
    gen = _gen_module()
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    anchors = {gen._anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert targets <= anchors, targets - anchors


def test_a_second_task_gets_its_own_tables(toy_task):
    text = _gen_module().render()
    toy = text[text.index("## Task `toy`"):]
    assert "Selected by `task = 'toy'`." in toy
    assert "### Shared settings with other defaults for `toy`" in toy
    assert "| `task` | `str` | `'toy'` | test task |" in toy  # the task overrides a shared field
    assert "### Toy settings" in toy and "| `n_samples` | `int` | `64` | dataset size |" in toy
    assert text.count("| `learning_rate` |") == 1  # shared settings are listed once
