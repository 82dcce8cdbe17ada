"""open_image dispatch (tif, OME-NGFF groups and levels, plain arrays), resampling fallback, exists()."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import tifffile
import zarr

from bioloop.data.ngff import Volume, write_volume
from bioloop.data.resample import ResampledVolume
from bioloop.data.sources import exists, open_image
from bioloop.errors import DataError

DATA = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)


@pytest.fixture(params=[2, 3], ids=["ngff0.4-zarr2", "ngff0.5-zarr3"])
def pyramid(tmp_path, request):
    path = tmp_path / "img.zarr" / "raw"
    write_volume(path, DATA, scale=(8, 4, 4), translation=(10, 20, 30), levels=2, zarr_format=request.param)
    return path


def test_ngff_levels_are_picked_by_voxel_size(pyramid):
    assert open_image(pyramid).path.endswith("raw/s0")
    s1 = open_image(pyramid, (16, 8, 8))
    assert isinstance(s1, Volume) and s1.path.endswith("raw/s1") and s1.translation == (14, 22, 32)
    near = open_image(pyramid, (16.1, 8.05, 7.95))  # within 1%: the stored level, not a resampled copy
    assert isinstance(near, Volume) and near.scale == (16, 8, 8)


def test_no_matching_level_gives_a_resampled_view_of_the_nearest_finer(pyramid):
    between = open_image(pyramid, (12, 6, 6))
    assert isinstance(between, ResampledVolume) and between.source.path.endswith("/s0")
    assert between.scale == (12, 6, 6) and between.translation == (10 - 4 + 6, 20 - 2 + 3, 30 - 2 + 3)
    coarse = open_image(pyramid, (64, 32, 32))
    assert coarse.source.path.endswith("/s1") and coarse.spatial_shape == (1, 1, 1)
    assert coarse.read((0, 0, 0), (1, 1, 1))[0, 0, 0] == pytest.approx(DATA.mean())  # whole-volume average
    fine = open_image(pyramid, (4, 2, 2))  # finer than every level: upsample the finest
    assert fine.source.path.endswith("/s0") and fine.spatial_shape == (8, 12, 16)
    mixed = open_image(pyramid, (16, 4, 4))  # s1 is coarser in y/x, so s0 is the one to resample
    assert mixed.source.path.endswith("/s0") and mixed.spatial_shape == (2, 6, 8)
    np.testing.assert_allclose(mixed.read((0, 0, 0), (1, 1, 2))[0, 0], (DATA[0, 0, :2] + DATA[1, 0, :2]) / 2)
    level = open_image(pyramid / "s1", (8, 4, 4))  # a level opened directly is the only source
    assert isinstance(level, ResampledVolume) and level.source.path.endswith("/s1")


def test_labels_resample_nearest(tmp_path):
    ids = np.zeros((2, 4, 4), np.uint32)
    ids[:, :2, :2], ids[:, 2:, 2:] = 70000, 3
    write_volume(tmp_path / "l.zarr", ids, scale=(4, 4, 4), labels=True)
    up = open_image(tmp_path / "l.zarr", (2, 2, 2), labels=True)
    out = up.read((0, 0, 0), up.spatial_shape)
    assert out.dtype == np.uint32 and set(np.unique(out)) == {0, 3, 70000}
    np.testing.assert_array_equal(out, ids.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    blended = open_image(tmp_path / "l.zarr", (2, 2, 2)).read((0, 0, 0), (1, 8, 8))
    assert len(np.unique(blended)) > 3  # without labels=True values get interpolated


def test_plain_arrays_take_the_callers_voxel_size(tmp_path):
    arr = zarr.create_array(tmp_path / "plain.zarr", shape=(3, 4, 5), dtype="uint8", zarr_format=2)
    arr[...] = 5
    vol = open_image(tmp_path / "plain.zarr", (30, 4, 4))
    assert isinstance(vol, Volume) and vol.scale == (30.0, 4.0, 4.0) and vol.shape == (3, 4, 5)
    assert open_image(tmp_path / "plain.zarr").scale == (1.0, 1.0, 1.0)


def test_tifs_resample_when_their_voxel_size_differs(tmp_path, capsys):
    path = tmp_path / "cell.ome.tif"
    tifffile.imwrite(path, DATA, ome=True, metadata={"axes": "ZYX", "PhysicalSizeZ": 0.008, "PhysicalSizeY": 0.004,
                                                     "PhysicalSizeX": 0.004})
    same = open_image(path, (8, 4, 4))
    assert isinstance(same, Volume) and same.scale == pytest.approx((8, 4, 4))
    assert "resampled" not in capsys.readouterr().err
    np.testing.assert_array_equal(open_image(path).array[...], DATA)
    half = open_image(path, (8, 8, 8))
    assert isinstance(half, ResampledVolume) and half.spatial_shape == (4, 3, 4)
    assert (f"{path}: voxel size (8, 4, 4) nm resampled to (8, 8, 8) nm (factor (1.0, 0.5, 0.5) per axis, linear)"
            in capsys.readouterr().err)
    assert half.read((0, 0, 0), (1, 1, 1))[0, 0, 0] == pytest.approx(DATA[0, :2, :2].mean())
    tifffile.imwrite(tmp_path / "flat.tif", DATA[0])  # 2D, no metadata: (y, x) voxel size from the caller
    flat = open_image(tmp_path / "flat.tif", (5, 5))
    assert isinstance(flat, Volume) and flat.scale == (1.0, 5.0, 5.0) and flat.shape == (1, 6, 8)


def test_open_image_errors(tmp_path, pyramid):
    with pytest.raises(DataError, match=r"img.zarr/raw: voxel size needs 3 positive values \(nm\) \(got \(8.0, 4.0\)\)"):
        open_image(pyramid, (8, 4))
    with pytest.raises(DataError, match="voxel size needs 3 positive values"):
        open_image(pyramid, (8, 0, 4))
    with pytest.raises(DataError, match="missing.zarr: no such zarr array or group"):
        open_image(tmp_path / "missing.zarr", (1, 1, 1))
    with pytest.raises(DataError, match="missing.tif: no such tif file"):
        open_image(tmp_path / "missing.tif")


def test_exists(tmp_path, pyramid):
    assert exists(pyramid) and exists(str(pyramid / "s0")) and exists(f"file://{pyramid}")
    assert not exists(tmp_path / "nothing.zarr")
    url = f"memory://bioloop-sources-{uuid.uuid4().hex}/img.zarr"
    write_volume(url, DATA, scale=(1, 1, 1))
    assert exists(url) and exists(url + "/s0") and not exists(url + "-missing")
    assert isinstance(open_image(url, (2, 2, 2)), ResampledVolume)
