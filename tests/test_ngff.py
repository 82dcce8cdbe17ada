"""OME-NGFF reading/writing: round trips, level choice, world coordinates, padded reads, pyramids."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import zarr

from bioloop.data.ngff import create_volume, open_volume, pyramid_transforms, write_volume
from bioloop.errors import DataError

DATA = np.arange(4 * 6 * 8, dtype=np.uint8).reshape(4, 6, 8)


@pytest.mark.parametrize("fmt,version", [(2, "0.4"), (3, "0.5")])
def test_round_trip_and_metadata_layout(tmp_path, fmt, version):
    path = tmp_path / "img.zarr" / "recon-1" / "em" / "raw"
    write_volume(path, DATA, scale=(8, 4, 4), translation=(10, 20, 30), zarr_format=fmt, levels=2)
    vol = open_volume(path)
    np.testing.assert_array_equal(vol.array[...], DATA)
    assert (vol.scale, vol.translation, vol.axes) == ((8, 4, 4), (10, 20, 30), ("z", "y", "x"))
    assert vol.shape == (4, 6, 8) and vol.ndim == 3 and vol.dtype == np.uint8
    assert vol.path.endswith("raw/s0")
    if fmt == 3:
        meta = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
        assert meta["version"] == "0.5"
        ms = meta["multiscales"][0]
    else:
        ms = json.loads((path / ".zattrs").read_text())["multiscales"][0]
        assert ms["version"] == version
    assert [d["path"] for d in ms["datasets"]] == ["s0", "s1"]
    assert ms["axes"][0] == {"name": "z", "type": "space", "unit": "nanometer"}
    # the parents become groups, so the whole hierarchy opens from its root
    root = zarr.open_group(tmp_path / "img.zarr", mode="r")
    assert root["recon-1/em/raw/s0"].shape == (4, 6, 8)


def test_scale_selection_and_error(tmp_path):
    path = tmp_path / "a.zarr"
    write_volume(path, DATA.astype(np.float32), scale=(8, 4, 4), levels=3)
    assert open_volume(path, (16, 8, 8)).path.endswith("/s1")
    assert open_volume(path, [32.0 * (1 + 1e-8), 16, 16]).path.endswith("/s2")
    assert open_volume(path, (16, 8, 8)).shape == (2, 3, 4)
    with pytest.raises(DataError) as err:
        open_volume(path, (8, 8, 8))
    text = str(err.value)
    assert str(path) in text and "(8.0, 8.0, 8.0)" in text and "'s1': (16.0, 8.0, 8.0)" in text
    with pytest.raises(DataError, match="voxel size needs 3 positive values"):
        open_volume(path, (8, 4))


def test_world_voxel_golden(tmp_path):
    vol = write_volume(tmp_path / "a.zarr", DATA, scale=(8, 4, 4), translation=(10, 20, 30))
    assert vol.voxel_to_world((1, 2, 3)) == (18.0, 28.0, 42.0)
    assert vol.world_to_voxel((18, 28, 42)) == (1.0, 2.0, 3.0)
    assert vol.world_to_voxel((14, 20, 31)) == (0.5, 0.0, 0.25)
    assert vol.roi == ((10, 20, 30), (10 + 4 * 8, 20 + 6 * 4, 30 + 8 * 4))


def test_edge_padded_reads(tmp_path):
    vol = write_volume(tmp_path / "a.zarr", DATA, scale=(8, 4, 4), translation=(10, 20, 30))
    box = vol.read((-1, 4, 6), (3, 3, 3), fill=255)
    assert box.shape == (3, 3, 3) and box.dtype == np.uint8
    assert (box[0] == 255).all() and (box[:, 2] == 255).all() and (box[:, :, 2] == 255).all()
    np.testing.assert_array_equal(box[1:, :2, :2], DATA[0:2, 4:6, 6:8])
    assert box[1, 0, 0] == 4 * 0 + 38  # DATA[0, 4, 6] = 4*8 + 6
    assert (vol.read((10, 0, 0), (2, 2, 2), fill=7) == 7).all()  # fully outside
    # world start (18, 28, 42) is voxel (1, 2, 3); 43.9 nm rounds to x voxel 3, 44.1 nm to 4
    np.testing.assert_array_equal(vol.read_world((18, 28, 43.9), (1, 1, 2)), DATA[1:2, 2:3, 3:5])
    np.testing.assert_array_equal(vol.read_world((18, 28, 44.1), (1, 1, 2)), DATA[1:2, 2:3, 4:6])
    with pytest.raises(DataError, match="read box needs 3 spatial or 3 values"):
        vol.read((0, 0), (1, 1))
    with pytest.raises(DataError, match="start and shape differ"):
        vol.read((0, 0, 0), (1, 1))


def test_pyramid_translation_golden(tmp_path):
    assert pyramid_transforms((8, 4, 4), (10, 20, 30), (2, 2, 2)) == ((16, 8, 8), (14, 22, 32))
    path = tmp_path / "p.zarr"
    write_volume(path, DATA.astype(np.float32), scale=(8, 4, 4), translation=(10, 20, 30), levels=3)
    s1, s2 = open_volume(path, (16, 8, 8)), open_volume(path, (32, 16, 16))
    assert s1.translation == (14, 22, 32)
    assert s2.translation == (14 + 8, 22 + 4, 32 + 4)
    # the centre of s1 voxel 0 is the centre of the s0 block [0:2, 0:2, 0:2]
    assert s1.voxel_to_world((0, 0, 0)) == tuple(np.mean([open_volume(path).voxel_to_world(i) for i in
                                                          [(0, 0, 0), (1, 1, 1)]], axis=0))
    assert s1.array[0, 0, 0] == pytest.approx(np.mean([0, 1, 8, 9, 48, 49, 56, 57]))  # = 28.5
    assert s2.shape == (1, 1, 2)


def test_pyramid_integer_mean_and_labels(tmp_path):
    img = np.zeros((2, 2, 2), np.uint8)
    img[0, 0, :] = (1, 2)  # block sum 3, mean 0.375 -> rounds to 0
    img[1, 1, 1] = 5  # sum 8, mean 1.0
    assert write_volume(tmp_path / "i.zarr", img, scale=(1, 1, 1), levels=2).array.shape == (2, 2, 2)
    assert open_volume(tmp_path / "i.zarr", (2, 2, 2)).array[0, 0, 0] == 1
    labels = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    write_volume(tmp_path / "l.zarr", labels, scale=(1, 1, 1), levels=2, labels=True)
    s1 = open_volume(tmp_path / "l.zarr", (2, 2, 2))
    assert s1.shape == (2, 3, 3)  # odd sizes drop the last voxel
    np.testing.assert_array_equal(s1.array[...], labels[0:4:2, 0:6:2, 0:6:2])


def test_channel_axis(tmp_path):
    data = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    vol = write_volume(tmp_path / "c.zarr", data, scale=(5, 5), translation=(1, 2), axes=("c", "y", "x"), levels=2)
    assert vol.axes == ("c", "y", "x") and vol.spatial_dims == (1, 2) and vol.spatial_shape == (4, 6)
    assert vol.roi == ((1, 2), (21, 32))
    assert vol.read((3, 5), (2, 2)).shape == (2, 2, 2)  # spatial box: every channel comes back
    np.testing.assert_array_equal(vol.read((3, 5), (2, 2))[:, 0, 0], data[:, 3, 5])
    np.testing.assert_array_equal(vol.read((1, 0, 0), (1, 1, 2)), data[1:2, 0:1, 0:2])  # full-axis box
    assert open_volume(tmp_path / "c.zarr", (10, 10)).shape == (2, 2, 3)  # channels not downsampled


def test_plain_array_and_direct_level(tmp_path):
    arr = zarr.create_array(tmp_path / "plain.zarr", shape=(3, 4), dtype="int32", chunks=(3, 4), zarr_format=2)
    arr[...] = 1
    vol = open_volume(tmp_path / "plain.zarr")
    assert (vol.scale, vol.translation, vol.axes) == ((1.0, 1.0), (0.0, 0.0), ("y", "x"))
    assert open_volume(tmp_path / "plain.zarr", (4, 2)).scale == (4.0, 2.0)
    write_volume(tmp_path / "m.zarr", DATA, scale=(8, 4, 4), translation=(10, 20, 30), levels=2)
    level = open_volume(tmp_path / "m.zarr" / "s1")  # a level array opened directly keeps its metadata
    assert level.scale == (16, 8, 8) and level.translation == (14, 22, 32)
    with pytest.raises(DataError, match="no level with voxel size"):
        open_volume(tmp_path / "m.zarr" / "s1", (8, 4, 4))


def test_composed_transforms_and_units(tmp_path):
    group = zarr.open_group(tmp_path / "h.zarr", mode="w", zarr_format=2)
    group.create_array("0", shape=(2, 2, 2), dtype="uint8")
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [0.004, 0.004, 0.004]}, {"type": "translation", "translation": [0.001] * 3}]}],
        "coordinateTransformations": [{"type": "scale", "scale": [2, 2, 1]},
                                      {"type": "translation", "translation": [0.1, 0, 0]}],
    }]
    vol = open_volume(tmp_path / "h.zarr", (8, 8, 4))
    assert vol.scale == pytest.approx((8, 8, 4))
    assert vol.translation == pytest.approx((102, 2, 1))  # (0.001 * 2 + 0.1) um = 102 nm


def _group_with(tmp_path, ms):
    group = zarr.open_group(tmp_path / "bad.zarr", mode="w", zarr_format=3)
    group.create_array("s0", shape=(2, 2), dtype="uint8")
    if ms is not None:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    return tmp_path / "bad.zarr"


AXES = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


@pytest.mark.parametrize("ms,message", [
    (None, "no OME-NGFF 'multiscales' metadata"),
    ({"axes": AXES, "datasets": []}, "lists no datasets"),
    ({"axes": AXES, "datasets": [{"path": "s9"}]}, "lists level 's9' but it is missing"),
    ({"axes": [{"name": "c", "type": "channel"}] * 2, "datasets": [{"path": "s0"}]}, "axes contain no 'space' axis"),
    ({"axes": [{"name": "y", "type": "space", "unit": "parsec"}, AXES[1]], "datasets": [{"path": "s0"}]},
     "unknown unit for axis 'y'"),
    ({"axes": AXES, "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1]}]}]},
     "malformed coordinateTransformation"),
])
def test_metadata_errors(tmp_path, ms, message):
    with pytest.raises(DataError, match=message):
        open_volume(_group_with(tmp_path, ms))


def test_missing_and_existing_paths(tmp_path):
    with pytest.raises(DataError) as err:
        open_volume(tmp_path / "nope.zarr")
    assert str(tmp_path / "nope.zarr") in str(err.value) and "check the path" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a readable zarr array or group"):
        open_volume(tmp_path / "empty")
    create_volume(tmp_path / "x.zarr", (2, 2), "uint8", scale=(1, 1), axes=("y", "x"))
    with pytest.raises(DataError, match="already exists; pass overwrite=True"):
        create_volume(tmp_path / "x.zarr", (2, 2), "uint8", scale=(1, 1), axes=("y", "x"))
    arr = create_volume(tmp_path / "x.zarr", (3, 3), "uint8", scale=(1, 1), axes=("y", "x"), overwrite=True)
    assert arr.shape == (3, 3)


def test_write_argument_errors(tmp_path):
    with pytest.raises(DataError, match="axes do not match the data"):
        write_volume(tmp_path / "a.zarr", DATA, scale=(1, 1, 1), axes=("y", "x"))
    with pytest.raises(DataError, match="do not match the shape"):
        create_volume(tmp_path / "a.zarr", (2, 2), "uint8", scale=(1, 1, 1))
    with pytest.raises(DataError, match="translation needs 3 values"):
        write_volume(tmp_path / "a.zarr", DATA, scale=(1, 1, 1), translation=(0, 0))
    with pytest.raises(DataError, match="zarr_format must be 2 or 3"):
        write_volume(tmp_path / "a.zarr", DATA, scale=(1, 1, 1), zarr_format=4)


def test_url_paths_go_through_fsspec():
    url = f"memory://bioloop-test-{uuid.uuid4().hex}/img.zarr"
    write_volume(url, DATA, scale=(8, 4, 4), zarr_format=3, levels=2)
    vol = open_volume(url, (16, 8, 8))
    assert type(vol.array.store).__name__ == "FsspecStore"
    assert vol.read((0, 0, 0), (1, 1, 1))[0, 0, 0] == round(np.mean([0, 1, 8, 9, 48, 49, 56, 57]))
    with pytest.raises(DataError, match="no zarr array or group here"):
        open_volume(url + "-missing")


def test_nan_fill_on_integer_image_gives_float(tmp_path):
    vol = write_volume(tmp_path / "a.zarr", DATA, scale=(1, 1, 1))
    box = vol.read((3, 5, 7), (2, 2, 2), fill=np.nan)
    assert box.dtype == np.float32 and box[0, 0, 0] == DATA[3, 5, 7] and np.isnan(box[1]).all()
