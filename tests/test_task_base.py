"""The Task base class: hooks declared once, misspelt hooks refused, the registry the one list of names."""

from __future__ import annotations

import inspect

import pytest

from bioloop.tasks import TASKS, get_task
from bioloop.tasks.base import Task


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_subclasses_the_base_and_overrides_only_declared_hooks(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    for attr, value in vars(type(task)).items():
        if attr.startswith("_") or not callable(getattr(task, attr)):
            continue
        if attr in Task.HOOKS:  # an override keeps the base's parameters, so the engine's call fits
            base = [p.name for p in inspect.signature(getattr(Task, attr)).parameters.values()
                    if p.kind is p.POSITIONAL_OR_KEYWORD]
            mine = [p.name for p in inspect.signature(getattr(type(task), attr)).parameters.values()
                    if p.kind is p.POSITIONAL_OR_KEYWORD]
            assert mine[:len(base)] == base, (name, attr, mine, base)


@pytest.mark.parametrize("misspelt, hint", [("before_optimiser_step", "before_optimizer_step"),
                                             ("after_train", "after_training"), ("colate", "collate"),
                                             ("on_epoch_end", None)])
def test_a_misspelt_hook_is_refused_when_the_class_is_defined(misspelt, hint):
    with pytest.raises(TypeError, match="looks like an engine hook but is not one") as err:
        type("Misspelt", (Task,), {misspelt: lambda self, *a: None})
    assert misspelt in str(err.value)
    if hint:
        assert f"did you mean '{hint}'?" in str(err.value)


def test_helpers_and_private_names_are_allowed():
    cls = type("Fine", (Task,), {"track_clip": lambda self: None, "_before_x": lambda self: None})
    assert cls.track_clip and cls._before_x


def test_a_task_without_a_required_hook_cannot_be_made():
    cls = type("Half", (Task,), {"build_model": lambda self, cfg: None})
    with pytest.raises(TypeError, match="abstract"):
        cls()


def test_the_engine_calls_no_hook_by_probing():
    """No getattr/hasattr on a task object anywhere in the engine, the API or the CLI."""
    import re
    from pathlib import Path

    import bioloop

    root = Path(bioloop.__file__).parent
    files = [*(root / "engine").glob("*.py"), root / "api.py", root / "cli.py"]
    probing = re.compile(r"(getattr|hasattr)\((self\.)?task\b")
    assert [f.name for f in files if probing.search(f.read_text())] == []


def test_task_names_live_only_in_the_registry(write_config):
    from bioloop.config.loader import load_config
    from bioloop.errors import ConfigError

    path = write_config("task = 'posse'\n")
    with pytest.raises(ConfigError, match=r"cfg.py: task: unknown task \(did you mean 'pose'\?\)"):
        load_config(path)
    from bioloop.config.schema import TrainingConfig

    assert TrainingConfig.__attrs_attrs__.task.type == "str"  # no second list of names in the schema


def test_commands_a_task_lacks_are_refused_naming_the_tasks_that_have_them(write_config):
    from bioloop.config.loader import load_config
    from bioloop.errors import ConfigError

    cfg = load_config(write_config("task = 'pose'\n"))
    with pytest.raises(ConfigError) as err:
        get_task("pose").process(cfg)
    assert str(err.value) == ("cfg.py: task: process does not apply to the pose task (got 'pose'); "
                              "use it with task = 'segmentation'")


def test_no_task_imports_another_task_or_the_api():
    """Shared pieces live in bioloop/data, bioloop/models, bioloop/engine, bioloop/config."""
    import re
    from pathlib import Path

    import bioloop

    root = Path(bioloop.__file__).parent / "tasks"
    found = []
    packages = [p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    for package in packages:
        others = "|".join(n for n in packages if n != package)
        pattern = re.compile(rf"(from|import) bioloop\.(api\b|tasks\.({others})\b)|from bioloop import api")
        package = root / package
        found += [f"{f.relative_to(root)}: {m.group(0)}" for f in package.glob("*.py")
                  for m in pattern.finditer(f.read_text())]
    assert found == []
