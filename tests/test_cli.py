"""CLI wiring through click's CliRunner: commands, exit codes, messages without tracebacks."""

from __future__ import annotations

import subprocess
import sys
import time

from click.testing import CliRunner

from bioloop._version import __version__
from bioloop.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version_and_help():
    assert run("--version").output.strip().endswith(__version__)
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "predict", "evaluate", "config", "init", "demo"):
        assert command in result.output


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys, bioloop.cli; bioloop.cli.cli.main(['--help'], standalone_mode=False); print('torch' in sys.modules)"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
    assert time.perf_counter() - start < 5


def test_config_error_exits_2_without_traceback(write_config):
    path = write_config("learning_rat = 1\nbatch_size = 'x'\n")
    result = run("config", "check", path)
    assert result.exit_code == 2
    assert "cfg.py: unknown setting 'learning_rat' (did you mean 'learning_rate'?)" in result.output
    assert "cfg.py: batch_size: expected an integer" in result.output
    assert "Traceback" not in result.output


def test_user_config_exception_shows_the_users_traceback(write_config):
    path = write_config("import json\nvalue = json.loads('{')\n")
    result = run("config", "check", path)
    assert result.exit_code == 2
    assert 'cfg.py", line 2, in <module>' in result.output
    assert "JSONDecodeError" in result.output
    assert "bioloop/cli.py" not in result.output


def test_config_check_and_show(write_config):
    path = write_config("epochs = 3\n")
    assert run("config", "check", path).output.strip() == "cfg.py: OK (task segmentation)"
    shown = run("config", "show", path, "-s", "batch_size=2")
    assert shown.exit_code == 0 and "* epochs = 3" in shown.output and "* batch_size = 2" in shown.output


def test_override_error_from_the_command_line(write_config):
    result = run("config", "check", write_config(""), "-s", "epochs=many")
    assert result.exit_code == 2
    assert "command line -s epochs=many: epochs: expected an integer, got str 'many'" in result.output


def test_init_copies_an_example_and_refuses_to_overwrite(tmp_path):
    assert "segmentation_2d" in run("init").output
    dest = tmp_path / "mine.py"
    assert run("init", "segmentation_2d", dest).exit_code == 0
    assert "datasplit_path" in dest.read_text()
    again = run("init", "segmentation_2d", dest)
    assert again.exit_code == 2 and "already exists; nothing was copied" in again.output
    typo = run("init", "segmentation2d", tmp_path / "x.py")
    assert typo.exit_code == 2 and "did you mean 'segmentation_2d'" in typo.output


def test_init_copies_a_config_that_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run("init", "segmentation_2d", "my.py")
    assert run("config", "check", "my.py").exit_code == 0


def test_predict_without_a_trained_checkpoint_exits_1(seg_config, em_data):
    result = run("predict", seg_config(), "--input", em_data.raw_path, "--output", seg_config().parent / "p.zarr")
    assert result.exit_code == 1
    assert "no trained checkpoint found" in result.output and "never predicts with untrained weights" in result.output


def test_missing_checkpoint_file_for_load_model(seg_config):
    result = run("train", seg_config(extra="load_model = 'nothing/here.pth'\n"), "-q")
    assert result.exit_code == 1
    assert "load_model: checkpoint file not found" in result.output
