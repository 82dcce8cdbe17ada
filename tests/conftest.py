import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("BIOLOOP_PROGRESS", "0")
# OpenMP threads spin while waiting: on a busy 2-core box, 2 torch threads run tiny ops 10-50x slower
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


@pytest.fixture(scope="session")
def em_data(tmp_path_factory):
    """A small synthetic EM dataset (shared, read-only): 4 x 128 x 192 voxels, 6 crops."""
    from bioloop.data.synthetic import make_em_dataset

    return make_em_dataset(tmp_path_factory.mktemp("em"), shape=(4, 128, 192))


SEG_CONFIG = """
datasplit_path = {datasplit!r}
classes = ["nuc", "mito"]
input_array_info = {{"shape": (1, 32, 32), "scale": (8, 8, 8)}}
model_kwargs = {{"depth": 2, "base_channels": 4}}
learning_rate = 3e-3
batch_size = 4
epochs = {epochs}
iterations_per_epoch = {ipe}
validation_batch_limit = 4
num_workers = 0
load_model = "latest"
"""


@pytest.fixture
def seg_config(em_data, tmp_path):
    """Write a tiny segmentation config into ``tmp_path/name`` and return its path."""

    def write(name="seg.py", epochs=2, ipe=3, extra=""):
        path = tmp_path / name
        path.write_text(SEG_CONFIG.format(datasplit=em_data.datasplit_path, epochs=epochs, ipe=ipe) + extra)
        return path

    return write


@pytest.fixture
def one_thread():
    """Tiny models and detector steps run fastest on one torch thread and never oversubscribe a busy CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
