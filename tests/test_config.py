"""Config files: every user-facing message, from real files; live objects; overrides; paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bioloop import api
from bioloop.config import EarlyStopping
from bioloop.config.resolved import format_settings, to_plain
from bioloop.errors import ConfigError, ConfigExecutionError


def _load(write_config, text, overrides=(), name="train.py"):
    return api.load_config(write_config(text, name), overrides)


def _problems(write_config, text, overrides=()):
    with pytest.raises(ConfigError) as info:
        _load(write_config, text, overrides)
    return info.value.problems


def test_defaults_and_task(write_config):
    cfg = _load(write_config, "")
    assert cfg.task == "segmentation" and cfg.learning_rate == 1e-4 and cfg.batch_size == 8
    assert cfg.load_model == "latest" and cfg.classes == ["nuc", "er"]


def test_unknown_setting_with_did_you_mean(write_config):
    assert _problems(write_config, "learning_rat = 1e-3\n") == [
        "train.py: unknown setting 'learning_rat' (did you mean 'learning_rate'?)"
    ]


def test_every_problem_is_reported_at_once(write_config):
    problems = _problems(write_config, "learning_rat = 1\nbatch_size = 10.7\nepochs = '5'\nclasses = []\n")
    assert len(problems) == 4
    assert all(p.startswith("train.py: ") for p in problems)
    assert "train.py: batch_size: expected an integer, got float 10.7" in problems
    assert "train.py: epochs: expected an integer, got str '5'" in problems
    assert "train.py: classes: must not be empty (got [])" in problems


@pytest.mark.parametrize(
    "text, expected",
    [
        ("deterministic = 'false'\n", "deterministic: expected True or False, got str 'false'"),
        ("learning_rate = -1.0\n", "learning_rate: must be > 0 (got -1.0)"),
        ("learning_rate = float('nan')\n", "learning_rate: must be a finite number (got nan)"),
        ("precision = 'fp16'\n", "precision: expected one of '32', 'bf16', '16', got str 'fp16'"),
        ("precision = 16\n", "precision: expected one of '32', 'bf16', '16', got int 16"),
        ("model_save_path = 'ck/model.pth'\n", "model_save_path: must contain {epoch} (got 'ck/model.pth')"),
        ("device = 'gpu'\n", "device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (got 'gpu')"),
        ("load_model = 'newest'\n", "load_model: expected 'latest', 'best', None or a checkpoint file path"),
        ("early_stopping = {'patience': 0}\n", "early_stopping.patience: must be >= 1 (got 0)"),
        ("early_stopping = {'patients': 3}\n", "unknown setting 'early_stopping.patients' (did you mean 'patience'?)"),
        ("logger = {'wandb': 'yes'}\n", "logger.wandb: expected dict[str, any] | None"),
        ("input_array_info = {'shape': (1, 64), 'scale': (8, 8, 8)}\n", "input_array_info.shape: expected 3 entries"),
        ("input_array_info = {'shape': (1, 64, 0), 'scale': (8, 8, 8)}\n", "input_array_info.shape: every entry must be > 0"),
        ("spatial_transforms = {'mirorr': {'axes': {'x': 0.5}}}\n", "unknown transform 'mirorr' (did you mean 'mirror'?)"),
        ("spatial_transforms = {'mirror': {'axes': {'w': 0.5}}}\n", "spatial_transforms.mirror.axes: unknown axis 'w'"),
        ("target_array_info = {'shape': (1, 256, 256), 'scale': (8, 8, 8)}\n", "target_array_info: the target patch"),
        ("target_array_info = {'shape': (4, 32, 32), 'scale': (8, 8, 8)}\n", "target_array_info: 2D input patches"),
        ("label_layout = 'instances'\n", "label_layout: 'instances' labels one class"),
        ("class_ids = {'nuc': 1}\n", "class_ids: needs exactly one id per class"),
        ("validation_prob = 1.0\n", "validation_prob: must be < 1"),
        ("normalization = {'mode': 'zscor'}\n", "normalization: unknown mode (did you mean 'zscore'?)"),
        ("intensity_transforms = {'nois': {'std': 0.1}}\n", "intensity_transforms: unknown"),
        ("process = {'thresholds': {'nuk': 0.3}}\n", "process.thresholds: unknown class 'nuk'"),
        ("input_array_info = {'raw': {'shape': (1, 32, 32), 'scale': (8, 8)}}\n", "input_array_info.scale: expected 3"),
        ("monitor = ['a', 'a']\n", "monitor: entries must be unique"),
        ("threshold = 1.5\n", "threshold: must be between 0.0 and 1.0 (got 1.5)"),
    ],
)
def test_value_errors_name_the_file_and_key(write_config, text, expected):
    problems = _problems(write_config, text)
    assert any(p.startswith("train.py: ") and expected in p for p in problems), problems


def test_assigned_callable_with_typo_is_a_setting(write_config):
    problems = _problems(write_config, "import torch\noptimiser = torch.optim.AdamW\n")
    assert problems == ["train.py: unknown setting 'optimiser' (did you mean 'optimizer'?)"]


def test_helpers_imports_and_private_names_are_ignored(write_config):
    text = "import math\nfrom pathlib import Path\n_tmp = 3\ndef helper():\n    return 2\nclass Net: pass\nepochs = helper()\n"
    assert _load(write_config, text).epochs == 2


def test_unknown_name_without_a_close_match_suggests_a_private_name(write_config):
    assert _problems(write_config, "PATCH = 128\n") == [
        "train.py: unknown setting 'PATCH'; name helper variables with a leading '_'"
    ]


def test_unknown_and_planned_tasks(write_config):
    assert "unknown task (did you mean 'segmentation'?) (got 'segmentaton')" in str(
        _problems(write_config, "task = 'segmentaton'\n")[0])
    assert _load(write_config, "task = 'tracking'\n").task == "tracking"  # registered


def test_planned_task_is_reported_as_unavailable(monkeypatch):
    from bioloop import tasks

    monkeypatch.setattr(tasks, "PLANNED", ("imaginary",))
    with pytest.raises(ConfigError, match="task 'imaginary' is not available in this version"):
        tasks.get_task("imaginary")


def test_config_that_raises_shows_the_users_traceback(write_config):
    path = write_config("x = 1\n\ndef build():\n    return 1 / 0\n\nepochs = build()\n")
    with pytest.raises(ConfigExecutionError) as info:
        api.load_config(path)
    tb = info.value.user_traceback
    assert f'File "{path.resolve()}", line 6' in tb and "line 4, in build" in tb and "ZeroDivisionError" in tb
    assert "bioloop/config/loader.py" not in tb
    assert str(info.value).startswith(f"{path}: the config file raised ZeroDivisionError")


def test_syntax_error_names_the_line(write_config):
    path = write_config("epochs = 3\nbatch_size = = 2\n")
    with pytest.raises(ConfigExecutionError, match=r"line 2: syntax error"):
        api.load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.py: config file not found"):
        api.load_config(tmp_path / "nope.py")


def test_config_folder_is_importable_while_it_runs(write_config, tmp_path):
    (tmp_path / "mysettings.py").write_text("EPOCHS = 7\n")
    assert _load(write_config, "import mysettings\nepochs = mysettings.EPOCHS\n").epochs == 7


def test_relative_paths_resolve_against_the_config_folder(write_config, tmp_path):
    cfg = _load(write_config, "datasplit_path = 'data/split.csv'\nmodel_to_load = '../w.pth'\n")
    assert cfg.datasplit_path == str(tmp_path / "data" / "split.csv")
    assert cfg.model_to_load == str((tmp_path.parent / "w.pth").resolve())
    assert cfg.base_experiment_path == tmp_path
    assert cfg.run_dir == tmp_path / "tensorboard" / "2d_unet"


def test_remote_paths_stay_as_written(write_config):
    assert _load(write_config, "datasplit_path = 's3://bucket/split.csv'\n").datasplit_path == "s3://bucket/split.csv"


def test_overrides_are_typed_and_validated(write_config):
    cfg = _load(write_config, "epochs = 3\n", ["epochs=5", "learning_rate=1e-3", "early_stopping.patience=4",
                                                "device=cpu", "load_model=None", "classes=['a', 'b']"])
    assert cfg.epochs == 5 and cfg.learning_rate == 1e-3 and cfg.device == "cpu" and cfg.load_model is None
    assert cfg.early_stopping == EarlyStopping(patience=4) and cfg.classes == ["a", "b"]
    problems = _problems(write_config, "", ["epochs=2.5", "lerning_rate=1", "nokey", "early_stopping.patiense=2",
                                            "epochs.x=1"])
    assert "command line -s epochs=2.5: epochs: expected an integer, got float 2.5" in problems
    assert "command line -s lerning_rate=1: unknown setting 'lerning_rate' (did you mean 'learning_rate'?)" in problems
    assert "command line: override must look like key=value (got 'nokey')" in problems
    assert any("unknown setting 'early_stopping.patiense' (did you mean 'patience'?)" in p for p in problems)
    assert any("'epochs' is not a section" in p for p in problems)


def test_override_into_a_section_given_as_an_object(write_config):
    text = "from bioloop.config import EarlyStopping\nearly_stopping = EarlyStopping(patience=3, min_delta=0.1)\n"
    cfg = _load(write_config, text, ["early_stopping.patience=9"])
    assert cfg.early_stopping == EarlyStopping(patience=9, min_delta=0.1)


def test_live_objects_are_accepted(write_config):
    text = (
        "import torch\n"
        "from functools import partial\n"
        "model = torch.nn.Conv2d(1, 2, 3, padding=1)\n"
        "optimizer = partial(torch.optim.SGD, lr=0.1)\n"
        "scheduler = {'type': 'SequentialLR', 'params': {'schedulers': [\n"
        "    {'type': 'LinearLR', 'params': {'start_factor': 0.1, 'total_iters': 2}},\n"
        "    {'type': 'LRListScheduler', 'params': {'milestones': [5], 'lr_list': [[0.01]]}}], 'milestones': [2]}}\n"
        "criterion = torch.nn.BCEWithLogitsLoss\n"
    )
    cfg = _load(write_config, text)
    assert isinstance(cfg.model, torch.nn.Conv2d) and cfg.criterion is torch.nn.BCEWithLogitsLoss
    plain = to_plain(cfg)
    assert plain["model"]["type"] == "torch.nn.modules.conv.Conv2d" and "Conv2d(1, 2" in plain["model"]["repr"]
    assert plain["criterion"] == {"type": "torch.nn.modules.loss.BCEWithLogitsLoss"}


def test_config_show_marks_what_the_user_set(write_config):
    text = format_settings(_load(write_config, "epochs = 3\n", ["batch_size=2"]))
    assert "* epochs = 3" in text and "* batch_size = 2" in text and "  learning_rate = 0.0001" in text


def test_dotted_override_into_a_section_left_at_its_default(write_config):
    cfg = _load(write_config, "", ["input_array_info.shape=(1, 32, 32)", "logger.log_every_n_steps=3"])
    assert cfg.input_array_info.shape == (1, 32, 32) and cfg.input_array_info.scale == (8.0, 8.0, 8.0)
    assert cfg.logger.log_every_n_steps == 3
