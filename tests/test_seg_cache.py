"""The crop data cache (bioloop.data.cache) and the persistent training/validation loaders."""

import numpy as np
import pytest
import torch

from bioloop.config.loader import load_config
from bioloop.data import cache as C
from bioloop.data.ngff import write_volume
from bioloop.engine.loader import TrainLoader
from bioloop.tasks import get_task


def test_chunked_reads_equal_the_source_and_the_cache_stays_within_its_capacity(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (20, 30, 40), dtype=np.uint8)
    source = write_volume(tmp_path / "v.zarr" / "raw", data, scale=(1, 1, 1), chunks=(8, 8, 8))
    cache = C.ChunkCache(capacity=3 * 8 * 8 * 8)  # three blocks
    volume = C.ChunkedVolume(source, cache)
    assert volume.block == (8, 8, 8)
    rng = np.random.default_rng(1)
    for _ in range(40):
        start = [int(rng.integers(-6, n)) for n in data.shape]
        shape = [int(rng.integers(1, 14)) for _ in data.shape]
        np.testing.assert_array_equal(volume.read(start, shape, fill=7), source.read(start, shape, fill=7))
        assert cache.nbytes <= cache.capacity
    cache.hits = cache.misses = 0
    volume.read((0, 0, 0), (8, 8, 8))
    volume.read((1, 1, 1), (6, 6, 6))  # the same block again: read from memory
    assert (cache.misses, cache.hits) in ((1, 1), (0, 2))
    nan_fill = volume.read((-2, 0, 0), (4, 4, 4), fill=np.nan)
    assert nan_fill.dtype == np.float32 and np.isnan(nan_fill[:2]).all()


def test_held_volume_views_are_read_only(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    source = write_volume(tmp_path / "v.zarr" / "raw", data, scale=(2, 2, 2))
    (held,) = C.hold([C.Region(source, (1, 1, 1), (3, 4, 5))], bound=10**6)
    assert held.voxel_to_world((0, 0, 0)) == source.voxel_to_world((1, 1, 1))  # the region, in world coordinates
    view = held.read((0, 0, 0), (2, 2, 2))
    np.testing.assert_array_equal(view, data[1:3, 1:3, 1:3])
    with pytest.raises(ValueError):
        view[0, 0, 0] = 1
    outside = held.read((-1, 0, 0), (2, 2, 2), fill=9)  # partly outside the region: a filled copy
    np.testing.assert_array_equal(outside[0], 9)
    np.testing.assert_array_equal(outside[1], data[1, 1:3, 1:3])


def test_plan_holds_everything_under_the_bound_and_a_prefix_beyond_it():
    assert C.plan([10, 20, 30], bound=60).chunked == []
    p = C.plan([10, 20, 30, 40], bound=70, processes=2)
    assert p.held == [0, 1] and p.chunked == [2, 3]  # 30 bytes <= half the bound
    assert p.chunk_capacity == (70 - 30) // 2  # the rest of the bound, split over the reading processes
    lines = []
    C.hold([], bound=1, say=lines.append)
    assert lines == []


def test_default_bound_is_a_quarter_of_ram_shared_by_the_processes_of_a_machine(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    one = C.default_cache_bytes()
    assert one == int(C.physical_memory() * 0.25)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun with 4 processes on this machine
    assert C.default_cache_bytes() == one // 4


BASE = """
datasplit_path = {datasplit!r}
classes = ["nuc", "mito"]
input_array_info = {{"shape": {shape}, "scale": (8, 8, 8)}}
spatial_transforms = {{"mirror": {{"axes": {{"x": 0.5, "y": 0.5}}}}, "transpose": {{"axes": ["x", "y"]}}}}
intensity_transforms = {{"brightness": {{"range": [-0.1, 0.1]}}}}
batch_size = 4
iterations_per_epoch = 3
{extra}
"""


def _datasets(em_data, tmp_path, extra="", shape=(1, 32, 32), name="cfg.py"):
    path = tmp_path / name
    path.write_text(BASE.format(datasplit=em_data.datasplit_path, shape=shape, extra=extra))
    cfg = load_config(path)
    return cfg, get_task("segmentation").build_datasets(cfg)


def _batches(cfg, train, workers, epochs=(0, 1, 2), start_batch=0):
    loader = TrainLoader(train, batch_size=cfg.batch_size, num_workers=workers, seed=cfg.random_seed,
                         iterations_per_epoch=cfg.iterations_per_epoch)
    return [[b for b in loader.epoch(e, start_batch if e == epochs[0] else 0)] for e in epochs]


def _assert_same(a, b):
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert len(ea) == len(eb)
        for x, y in zip(ea, eb):
            assert x.keys() == y.keys()
            for key in x:
                torch.testing.assert_close(x[key], y[key], equal_nan=True, rtol=0, atol=0)


def test_over_the_bound_the_samples_are_the_same_and_one_line_says_so(em_data, tmp_path, capfd):
    cfg, (train, val) = _datasets(em_data, tmp_path)
    assert "data cache:" not in capfd.readouterr().err
    small_cfg, (small, small_val) = _datasets(em_data, tmp_path, "cache_bytes = 200_000", name="small.py")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("data cache:")]
    assert len(lines) == 1 and "more than cache_bytes (195.3 KiB)" in lines[0] and "LRU" in lines[0]
    chunked = [c.raw for c in small.source.crops if isinstance(c.raw, C.ChunkedVolume)]
    assert chunked  # the later crops' raw boxes go through the chunk cache
    _assert_same(_batches(cfg, train, 0, epochs=(0,)), _batches(small_cfg, small, 0, epochs=(0,)))
    for i in range(len(val)):
        _assert_same([[val[i]]], [[small_val[i]]])
    cache = chunked[0].cache
    assert 0 < cache.nbytes <= cache.capacity  # memory stays within the bound however much is read


def test_samples_are_the_same_with_any_worker_count_and_after_resuming(em_data, tmp_path):
    cfg, (train, _) = _datasets(em_data, tmp_path)
    serial = _batches(cfg, train, 0)
    _assert_same(serial, _batches(cfg, train, 2))  # persistent workers across three epochs
    resumed = _batches(cfg, train, 2, epochs=(1, 2), start_batch=1)
    _assert_same([serial[1][1:], serial[2]], resumed)
    assert not torch.equal(serial[0][0]["raw"], serial[1][0]["raw"])  # epochs differ


def _expected(cfg, train, epochs):
    """Batches computed in this process the old way: set_epoch, then index the dataset with the sampler's keys."""
    from torch.utils.data import default_collate

    from bioloop.engine.sampling import EpochSampler

    out = []
    for e in epochs:
        train.set_epoch(e)
        keys = list(EpochSampler(len(train), epoch=e, seed=cfg.random_seed, batch_size=cfg.batch_size,
                                 iterations_per_epoch=cfg.iterations_per_epoch))
        out.append([default_collate([train[k] for k in keys[i:i + cfg.batch_size]])
                    for i in range(0, len(keys), cfg.batch_size)])
    return out


def test_persistent_workers_see_the_epoch_of_the_patch_buffer(em_data, tmp_path):
    # a buffer of 4 patches redrawn every epoch: workers started in epoch 0 must cut epoch 1's buffer in epoch 1
    cfg, (train, _) = _datasets(em_data, tmp_path, "patch_per_buffer = 4\nepoch_shuffle = 1")
    _, (fresh, _) = _datasets(em_data, tmp_path, "patch_per_buffer = 4\nepoch_shuffle = 1", name="fresh.py")
    expected = _expected(cfg, fresh, (0, 1, 2))
    _assert_same(expected, _batches(cfg, train, 2))
    _assert_same(expected, _batches(cfg, train, 0))
    first = {tuple(b["raw"].flatten()[:64].tolist()) for b in expected[0][0:1]}
    second = {tuple(b["raw"].flatten()[:64].tolist()) for b in expected[1]}
    assert not first & second  # the buffer was redrawn


def test_device_augmentation_of_a_dataset_batch_equals_the_cpu_samples(em_data, tmp_path):
    cfg, (train, _) = _datasets(em_data, tmp_path, shape=(1, 32, 32))
    dev_cfg, (dev, _) = _datasets(em_data, tmp_path, "augment_on_device = True", name="dev.py")
    from bioloop.tasks.segmentation.device_augment import augment_batch

    (cpu,) = _batches(cfg, train, 0, epochs=(0,))
    (raw_batches,) = _batches(dev_cfg, dev, 0, epochs=(0,))
    for a, b in zip(cpu, raw_batches):
        assert "augment" in b
        got = augment_batch(dict(b), dev_cfg)
        torch.testing.assert_close(got["raw"], a["raw"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["target"], a["target"], equal_nan=True, rtol=0, atol=0)


def test_device_augmentation_refuses_dataloader_transforms_after_it(tmp_path):
    from bioloop.errors import ConfigError

    (tmp_path / "c.py").write_text("augment_on_device = True\ntarget_value_transforms = abs\n")
    with pytest.raises(ConfigError, match="augment_on_device: cannot be combined with target_value_transforms"):
        load_config(tmp_path / "c.py")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_dtype_normalisation_fast_path_gives_the_float64_values_for_every_value(dtype):
    from bioloop.tasks.segmentation.normalization import Normalizer

    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1).astype(dtype)
    exact = ((values.astype(np.float64) - info.min) / float(info.max - info.min)).astype(np.float32)
    np.testing.assert_array_equal(Normalizer("dtype")(values), exact)
    np.testing.assert_array_equal(Normalizer("dtype")(values[::-3]), exact[::-3])  # strided views too
    norm = Normalizer("minmax", min=float(info.min) / 2, max=float(info.max) / 2, clip=True)
    big = np.resize(values, 5 * values.size)  # large enough for the lookup table
    expected = np.clip((big.astype(np.float64) - norm.params["min"]) / (norm.params["max"] - norm.params["min"]),
                       0, 1).astype(np.float32)
    np.testing.assert_array_equal(norm(big), expected)


@pytest.mark.parametrize("shape", [(1, 32, 32), (4, 16, 16)])  # the crops are 4 voxels deep
def test_batched_extraction_equals_per_sample_extraction(em_data, tmp_path, shape, monkeypatch):
    cfg, (train, _) = _datasets(em_data, tmp_path, shape=shape)
    keys = [(i % len(train), 1000 + i) for i in range(16)]
    single = [train[k] for k in keys]
    assert train.source.batched()
    calls = []
    draw = train.source.draw
    monkeypatch.setattr(train.source, "draw", lambda *a, **k: calls.append(1) or draw(*a, **k))
    batched = train.__getitems__(keys)
    assert not calls  # every patch lies inside the in-memory crops: all cut by the batched path
    _assert_same([single], [batched])
    assert len({tuple(s["raw"].flatten()[:8].tolist()) for s in batched}) == len(keys)  # distinct patches
