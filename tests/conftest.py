import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("BIOLOOP_PROGRESS", "0")


@pytest.fixture
def toy_task(monkeypatch):
    """Register the toy regression task as 'toy' for the duration of a test."""
    import bioloop.tasks as tasks
    from tests.toy_task import ToyTask

    task = ToyTask()
    monkeypatch.setitem(tasks.TASKS, "toy", "tests.toy_task:TASK")
    monkeypatch.setitem(tasks._loaded, "toy", task)
    return task


@pytest.fixture
def write_config(tmp_path, monkeypatch):
    """Write a config file into tmp_path (the working folder) and return its relative path."""
    monkeypatch.chdir(tmp_path)

    def write(text: str, name: str = "cfg.py"):
        (tmp_path / name).write_text(text)
        return __import__("pathlib").Path(name)

    return write
