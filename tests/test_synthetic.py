"""The synthetic CellMap-layout EM dataset: layout, alignment of crops with raw, determinism, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bioloop.data.datasplit import read_datasplit
from bioloop.errors import DataError
from bioloop.data.ngff import open_volume
from bioloop.data.synthetic import make_em_dataset

SMALL = (8, 96, 96)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    start = time.process_time()  # CPU seconds of all threads: robust to a busy machine, unlike wall time
    ds = make_em_dataset(root)  # default size
    return ds, time.process_time() - start


def test_runtime_bound(dataset):
    assert dataset[1] < 5.0


def test_raw_layout(dataset):
    ds, _ = dataset
    assert ds.raw_path == f"{ds.zarr_path}/recon-1/em/fibsem-uint8"
    s0 = open_volume(ds.raw_path, (8, 8, 8))
    s1 = open_volume(ds.raw_path, (16, 16, 16))
    assert s0.shape == (24, 384, 384) and s0.dtype == np.uint8 and s0.axes == ("z", "y", "x")
    assert s1.shape == (12, 192, 192)
    assert s1.translation == tuple(t + 4 for t in s0.translation)
    raw = s0.array[...]
    assert 20 < raw.std() and np.mean((raw == 0) | (raw == 255)) < 1e-3  # textured, barely saturated


def test_crops_and_datasplit(dataset):
    ds, _ = dataset
    entries = read_datasplit(ds.datasplit_path)
    assert [e.usage for e in entries].count("train") >= 3 and [e.usage for e in entries].count("validate") == 1
    assert all(e.raw_path == ds.raw_path and e.classes == ("nuc", "mito") for e in entries)
    assert ds.test_crop_path not in [e.gt_path for e in entries]
    assert {c[1] for c in ds.crops} == {"train", "validate", "test"}
    raw_start, raw_stop = open_volume(ds.raw_path).roi
    boxes = []
    for name, usage, start, stop in ds.crops:
        nuc = open_volume(f"{ds.zarr_path}/recon-1/labels/groundtruth/{name}/nuc", (8, 8, 8))
        assert nuc.roi == (start, stop) and nuc.dtype == np.uint8
        assert set(np.unique(nuc.array[...])) <= {0, 1}
        assert all(a <= b and c <= d for a, b, c, d in zip(raw_start, start, stop, raw_stop))  # inside raw
        assert stop[1] - start[1] >= 0.4 * (raw_stop[1] - raw_start[1])
        boxes.append((start, stop))
    for i, (a0, a1) in enumerate(boxes):  # no two crops overlap
        for b0, b1 in boxes[i + 1:]:
            assert any(a1[k] <= b0[k] or b1[k] <= a0[k] for k in range(3))
    # exactly one train crop annotates only nuclei: its mito group is absent
    missing = [n for n, _, _, _ in ds.crops
               if not (open_volume_exists(f"{ds.zarr_path}/recon-1/labels/groundtruth/{n}/mito"))]
    assert len(missing) == 1 and dict((c[0], c[1]) for c in ds.crops)[missing[0]] == "train"
    assert ds.test_roi == next((c[2], c[3]) for c in ds.crops if c[1] == "test")


def open_volume_exists(path: str) -> bool:
    try:
        open_volume(path)
    except DataError:
        return False
    return True


def test_labels_align_with_raw_by_world_position(dataset):
    ds, _ = dataset
    raw = open_volume(ds.raw_path, (8, 8, 8))
    for name, usage, start, _ in ds.crops:
        group = f"{ds.zarr_path}/recon-1/labels/groundtruth/{name}"
        nuc = open_volume(f"{group}/nuc").array[...].astype(bool)
        assert 0.05 < nuc.mean() < 0.8, name  # every crop sees nuclei
        image = raw.read_world(start, nuc.shape).astype(float)
        background = image[~nuc]
        if usage != "train" or open_volume_exists(f"{group}/mito"):
            mito = open_volume(f"{group}/mito").array[...].astype(bool)
            assert mito.any(), name
            assert image[mito].mean() < background.mean() - 30, name
            background = image[~nuc & ~mito]
        assert image[nuc].mean() < background.mean() - 20, name
        # one voxel of misalignment already blurs the nuclear envelope: the labels sit on the real rim
        rim = nuc & ~np.roll(nuc, 3, axis=2) | nuc & ~np.roll(nuc, -3, axis=2)
        assert image[rim].mean() < image[nuc & ~rim].mean() - 10, name


def test_deterministic_per_seed_and_zarr_v2(tmp_path):
    a = make_em_dataset(tmp_path / "a", shape=SMALL, seed=3)
    b = make_em_dataset(tmp_path / "b", shape=SMALL, seed=3, zarr_format=2)
    c = make_em_dataset(tmp_path / "c", shape=SMALL, seed=4)
    raw_a, raw_b, raw_c = (open_volume(d.raw_path).array[...] for d in (a, b, c))
    np.testing.assert_array_equal(raw_a, raw_b)
    assert not np.array_equal(raw_a, raw_c)
    lab_a, lab_b = (open_volume(f"{d.zarr_path}/recon-1/labels/groundtruth/crop1/nuc").array[...] for d in (a, b))
    np.testing.assert_array_equal(lab_a, lab_b)
    assert (tmp_path / "b" / "synthetic_em.zarr" / ".zgroup").exists()
    assert a.crops == b.crops and len(read_datasplit(b.datasplit_path)) == 5
