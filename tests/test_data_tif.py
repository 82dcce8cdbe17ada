"""TIFF reading (axes, voxel size from OME/ImageJ/tags), Allen folder pairing and the synthetic Allen data."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from bioloop.data.synthetic_allen import make_allen_dataset
from bioloop.data.tif import find_allen_triplets, is_tif, open_tif
from bioloop.errors import DataError

CZYX = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(3, 2, 4, 5).transpose(1, 0, 2, 3)  # (C, Z, Y, X)


def test_ome_tif_axes_and_physical_size(tmp_path):
    zcyx = np.ascontiguousarray(CZYX.transpose(1, 0, 2, 3))
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, zcyx, ome=True, metadata={
        "axes": "ZCYX", "PhysicalSizeZ": 0.29, "PhysicalSizeY": 108.0, "PhysicalSizeYUnit": "nm",
        "PhysicalSizeX": 0.108, "PhysicalSizeXUnit": "µm"})
    vol = open_tif(path, scale=(1, 2, 3))  # the file's voxel size wins over the caller's
    assert vol.axes == ("c", "z", "y", "x") and vol.spatial_dims == (1, 2, 3)
    assert vol.shape == (2, 3, 4, 5) and vol.spatial_shape == (3, 4, 5) and vol.dtype == np.uint16
    assert vol.scale == pytest.approx((290.0, 108.0, 108.0)) and vol.translation == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(vol.array[...], CZYX)
    np.testing.assert_array_equal(vol.read((1, 2, 3), (2, 2, 2), fill=7)[:, 0, 0, 0], CZYX[:, 1, 2, 3])
    assert isinstance(vol.array.base, np.memmap) or isinstance(vol.array, np.memmap)


def test_ome_time_axis_of_one_is_dropped_and_longer_series_refused(tmp_path):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(1, 2, 3, 4, 5)
    tifffile.imwrite(tmp_path / "t1.tif", data, ome=True, metadata={"axes": "TCZYX", "PhysicalSizeZ": 1.0})
    vol = open_tif(tmp_path / "t1.tif")
    assert vol.axes == ("c", "z", "y", "x") and vol.scale == (1000.0, 1.0, 1.0)
    np.testing.assert_array_equal(vol.array[...], data[0])
    tifffile.imwrite(tmp_path / "t2.tif", data.reshape(2, 3, 4, 5), ome=True, metadata={"axes": "TZYX"})
    with pytest.raises(DataError, match=r"t2.tif: tif holds a time series of 2 time points \(got 'TZYX'\); save one"):
        open_tif(tmp_path / "t2.tif")


def test_imagej_spacing_and_resolution(tmp_path):
    data = np.random.default_rng(0).random((4, 6, 7), dtype=np.float32)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.25, 1 / 0.125),
                     metadata={"axes": "ZYX", "spacing": 0.5, "unit": "micron"})
    vol = open_tif(tmp_path / "ij.tif")
    assert vol.scale == pytest.approx((500.0, 125.0, 250.0))  # resolution is (x, y) pixels per unit
    np.testing.assert_array_equal(vol.array[...], data)
    tifffile.imwrite(tmp_path / "nm.tif", data, imagej=True, resolution=(0.25, 0.25),
                     metadata={"axes": "ZYX", "unit": "nm"})  # no spacing: z from the caller
    assert open_tif(tmp_path / "nm.tif", (30, 1, 1)).scale == pytest.approx((30.0, 4.0, 4.0))


def test_metric_resolution_tags_count_inch_does_not(tmp_path):
    tifffile.imwrite(tmp_path / "um.tif", np.zeros((4, 5), np.uint8), resolution=(10, 20), resolutionunit="MICROMETER")
    assert open_tif(tmp_path / "um.tif").scale == pytest.approx((1.0, 50.0, 100.0))
    tifffile.imwrite(tmp_path / "dpi.tif", np.zeros((4, 5), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert open_tif(tmp_path / "dpi.tif", (9, 8)).scale == (1.0, 9.0, 8.0)


def test_plain_stacks_2d_images_and_compression(tmp_path):
    stack = np.arange(5 * 4 * 6, dtype=np.uint16).reshape(5, 4, 6)
    tifffile.imwrite(tmp_path / "q.tif", stack)  # no metadata: axes QYX, caller's voxel size
    vol = open_tif(tmp_path / "q.tif", (40, 4, 4))
    assert vol.axes == ("z", "y", "x") and vol.scale == (40.0, 4.0, 4.0)
    assert open_tif(tmp_path / "q.tif").scale == (1.0, 1.0, 1.0)
    tifffile.imwrite(tmp_path / "zip.tiff", stack, compression="zlib")
    comp = open_tif(tmp_path / "zip.tiff", 2)
    assert not isinstance(comp.array, np.memmap) and comp.scale == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(comp.array[...], stack)
    tifffile.imwrite(tmp_path / "flat.tif", stack[0])
    flat = open_tif(tmp_path / "flat.tif", (4, 2))
    assert flat.shape == (1, 4, 6) and flat.axes == ("z", "y", "x") and flat.scale == (1.0, 4.0, 2.0)
    np.testing.assert_array_equal(flat.read((0, 1, 2), (1, 2, 2))[0], stack[0, 1:3, 2:4])
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 6, 3), np.uint8), photometric="rgb")
    rgb = open_tif(tmp_path / "rgb.tif")
    assert rgb.axes == ("c", "z", "y", "x") and rgb.shape == (3, 1, 4, 6)


def test_tif_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope.tif: no such tif file; check the path"):
        open_tif(tmp_path / "nope.tif")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"bad.tif: not a readable tif file .*; check that the file is a TIFF"):
        open_tif(tmp_path / "bad.tif")
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match=r"voxel size needs 3 positive values \(z, y, x in nm\) \(got \(4.0, 4.0\)\)"):
        open_tif(tmp_path / "s.tif", (4, 4))
    tifffile.imwrite(tmp_path / "odd.tif", np.zeros((2, 3, 4, 5), np.uint8), ome=True, metadata={"axes": "ZQYX"})
    with pytest.raises(DataError, match=r"odd.tif: unsupported tif axes \(got '.*'\); save the image as ZYX"):
        open_tif(tmp_path / "odd.tif")
    assert is_tif("a/b.OME.TIF") and is_tif("x.tiff") and not is_tif("x.zarr")


def _touch(folder, *names):
    for name in names:
        tifffile.imwrite(folder / name, np.zeros((2, 2), np.uint8))


def test_find_allen_triplets(tmp_path):
    _touch(tmp_path, "b.ome.tif", "b_GT.ome.tif", "a.tif", "a_GT.tif", "a_CM.tif", "unlabelled.tif")
    (tmp_path / "notes.txt").write_text("ignored")
    triplets = find_allen_triplets(tmp_path)
    assert triplets == [(str(tmp_path / "a.tif"), str(tmp_path / "a_GT.tif"), str(tmp_path / "a_CM.tif")),
                        (str(tmp_path / "b.ome.tif"), str(tmp_path / "b_GT.ome.tif"), None)]


@pytest.mark.parametrize("names,message", [
    (["a.tif", "a_GT.tif", "c_GT.tif"], r"c_GT.tif: label file has no matching image \(got 'c_GT.tif'\); add the image"),
    (["a.tif", "a_GT.tif", "x_CM.tif"], r"x_CM.tif: cost map has no matching _GT label file \(got 'x_CM.tif'\)"),
    (["a.tif", "a.ome.tif", "a_GT.tif"], r"a_GT.tif: label file matches several images"),
    (["a.tif", "a_GT.tif", "a_GT.ome.tif"], r"two _GT files for 'a'"),
    (["a.tif"], r"no \*_GT.tif label files; name each label file <image name>_GT.tif"),
])
def test_find_allen_triplets_errors(tmp_path, names, message):
    _touch(tmp_path, *names)
    with pytest.raises(DataError, match=message):
        find_allen_triplets(tmp_path)


def test_find_allen_triplets_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such folder; point to the folder"):
        find_allen_triplets(tmp_path / "nowhere")


def test_synthetic_allen_dataset(tmp_path):
    triplets = make_allen_dataset(tmp_path / "allen", n=2, shape=(8, 40, 48), seed=3, scale=(300, 100, 100))
    assert find_allen_triplets(tmp_path / "allen") == [tuple(t) for t in triplets]
    image, gt, cm = (open_tif(p) for p in triplets[0])
    for vol in (image, gt, cm):
        assert vol.shape == (8, 40, 48) and vol.scale == pytest.approx((300, 100, 100), rel=1e-6)
    assert (image.dtype, gt.dtype, cm.dtype) == (np.uint16, np.uint8, np.float32)
    img, mask, cost = image.array[...], gt.array[...], cm.array[...]
    assert set(np.unique(mask)) == {0, 1} and 0.03 < mask.mean() < 0.5
    inside, outside = img[mask == 1].astype(float), img[mask == 0].astype(float)
    assert inside.mean() - outside.mean() > 4 * outside.std()  # clearly brighter, yet noisy
    assert outside.std() > 50
    assert set(np.unique(cost)) == {1.0, 3.0}
    edge = cost == 3.0
    assert mask[edge].any() and (1 - mask[edge]).any()  # weights on both sides of the boundary
    again = make_allen_dataset(tmp_path / "again", n=2, shape=(8, 40, 48), seed=3, scale=(300, 100, 100))
    np.testing.assert_array_equal(open_tif(again[1][0]).array[...], open_tif(triplets[1][0]).array[...])
