"""predict/evaluate options declared once per task (bioloop.config.cli_options) and the CLI
options generated from them."""

import click
import pytest
from click.testing import CliRunner

from bioloop import cli as cli_module
from bioloop.config import cli_options
from bioloop.config.cli_options import COMMON, Option, click_options, task_tables, task_values
from bioloop.tasks import TASKS


def _flags(command):
    params = cli_module.cli.commands[command].params
    return {p.name: p.opts[0] for p in params}


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_every_table_option_is_a_cli_flag_and_every_task_lists_its_own(command):
    flags = _flags(command)
    tables = task_tables(command)
    assert list(tables) == list(TASKS)
    declared = {o.name for o in COMMON[command]} | {o.name for t in tables.values() for o in t}
    assert declared == set(flags) - {"config", "overrides", "quiet"}
    for task, options in tables.items():
        for other, theirs in tables.items():
            foreign = [o for o in theirs if o.name not in {m.name for m in options}]
            for option in foreign:  # a flag only another task lists is refused, naming it
                given = {option.name: option.type.choices[0] if isinstance(
                    option.type, click.Choice) else ("x" if not option.is_flag else True)}
                with pytest.raises(click.UsageError) as info:
                    task_values(command, task, given, flags)
                assert str(info.value) == f"{flags[option.name]} do not apply to the {task} task"


def test_task_defaults_fill_in_and_given_values_win():
    flags = _flags("predict")
    seg = task_values("predict", "segmentation", {"overlap": None, "tta": False}, flags)
    assert seg["overlap"] == 0.25 and seg["tta"] is False and seg["overwrite"] is False
    assert task_values("predict", "segmentation", {"overlap": 0.0}, flags)["overlap"] == 0.0
    pose = task_values("predict", "pose", {"save_video": False}, flags)
    assert pose["save_video"] is False  # --no-save-video is a choice, not "not given"
    assert task_values("predict", "pose", {}, flags)["save_video"] is None  # the config decides
    with pytest.raises(click.UsageError, match=r"^--tta, --video do not apply to the pose task$"):
        task_values("predict", "pose", {"tta": True, "video": "v.mp4", "slp": None}, flags)
    ev = _flags("evaluate")
    assert task_values("evaluate", "tracking", {}, ev)["untracked"] == "count"
    assert task_values("evaluate", "segmentation", {}, ev)["iou_threshold"] == 0.5
    assert task_values("evaluate", "pose", {"truth": ()}, ev)["truth"] == ()
    with pytest.raises(click.UsageError, match="--kind do not apply to the tracking task"):
        task_values("evaluate", "tracking", {"kind": "instance"}, ev)


def test_help_names_each_task_and_its_default():
    out = CliRunner().invoke(cli_module.cli, ["predict", "--help"], terminal_width=200).output
    assert "Segmentation: tiles per forward pass. Pose: frames per forward pass. Tracking: " \
           "instances per forward pass." in out
    assert "tile overlap fraction (blended) [default: 0.25]." in out


def test_two_tasks_disagreeing_on_an_option_is_refused(monkeypatch):
    tables = task_tables("predict")
    broken = dict(tables, pose=tables["pose"] + (Option("--tta", "tta", "other", type=int),))
    monkeypatch.setattr(cli_options, "task_tables", lambda command: broken)
    with pytest.raises(ValueError, match=r"pose: predict option --tta differs from another task"):
        click_options("predict")(lambda **kw: None)
    common = dict(tables, pose=tables["pose"] + (Option("--report", "report", "x"),))
    monkeypatch.setattr(cli_options, "task_tables", lambda command: common)
    with pytest.raises(ValueError, match=r"pose: evaluate option --report is common to every"):
        click_options("evaluate")(lambda **kw: None)
