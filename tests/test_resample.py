"""ResampledVolume: golden values for up/down sampling, label ids, world alignment, bounded reads."""

from __future__ import annotations

import numpy as np
import pytest

from bioloop.data.ngff import Volume, open_volume, write_volume
from bioloop.data.resample import ResampledVolume
from bioloop.errors import DataError


def _line(values, scale=2.0, translation=0.0, dtype=np.float32) -> Volume:
    """A (1, 1, N) volume along x."""
    data = np.asarray(values, dtype=dtype).reshape(1, 1, -1)
    return Volume(data, (1.0, 1.0, float(scale)), (0.0, 0.0, float(translation)), ("z", "y", "x"), "line")


def _x(vol) -> np.ndarray:
    return vol.read((0, 0, 0), (1, 1, vol.spatial_shape[2]))[0, 0]


def test_upsample_ramp_golden():
    up = ResampledVolume(_line([0, 10, 20, 30], scale=2), (1, 1, 1))
    assert up.spatial_shape == (1, 1, 8) and up.scale == (1, 1, 1)
    # target centres sit at source index j/2 - 1/4; edges clamp to the first/last voxel
    np.testing.assert_allclose(_x(up), [0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30])
    assert up.dtype == np.float32


def test_downsample_golden_and_area_average():
    down = ResampledVolume(_line(np.arange(8), scale=1), (1, 1, 2))
    assert down.spatial_shape == (1, 1, 4)
    np.testing.assert_allclose(_x(down), [0.5, 2.5, 4.5, 6.5])
    # 4x: each target voxel is the mean of the 4 source voxels it covers (linear would give 0 and 8)
    np.testing.assert_allclose(_x(ResampledVolume(_line([0, 0, 0, 4, 8, 8, 8, 8], scale=1), (1, 1, 4))), [1, 8])
    # 1.5x: source voxels split between targets by overlap, [0,1,2] -> (0*1 + 1*0.5) / 1.5, (1*0.5 + 2*1) / 1.5
    np.testing.assert_allclose(_x(ResampledVolume(_line([0, 1, 2], scale=1), (1, 1, 1.5))), [1 / 3, 5 / 3], rtol=1e-6)


def test_integer_images_round_back_to_their_dtype():
    up = ResampledVolume(_line([0, 1], scale=2, dtype=np.uint8), (1, 1, 1))
    out = _x(up)
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 1, 1]  # 0.25 -> 0, 0.75 -> 1
    assert _x(ResampledVolume(_line([0, 255], scale=2, dtype=np.uint8), (1, 1, 1))).tolist() == [0, 64, 191, 255]


def test_labels_keep_their_ids():
    ids = [7, 300, 9, 1000]
    up = ResampledVolume(_line(ids, scale=2, dtype=np.uint16), (1, 1, 1), labels=True)
    assert _x(up).tolist() == [7, 7, 300, 300, 9, 9, 1000, 1000]
    down = ResampledVolume(_line([5, 7, 9, 11, 13], scale=1, dtype=np.uint16), (1, 1, 2), labels=True)
    assert _x(down).tolist() == [5, 9]  # ties go low: voxels 0, 2 as in the ngff label pyramid
    rng = np.random.default_rng(0)
    blobs = rng.choice(np.array([0, 3, 65000], np.uint16), size=(3, 5, 7))
    vol = Volume(blobs, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), ("z", "y", "x"), "blobs")
    out = ResampledVolume(vol, (3.0, 2.5, 6.0), labels=True).read((0, 0, 0), (4, 8, 4))
    assert set(np.unique(out)) <= {0, 3, 65000}


def test_world_coordinates_line_up():
    src = _line(np.arange(6), scale=4, translation=10)
    down = ResampledVolume(src, (1, 1, 8))
    # translation = 10 - 4/2 + 8/2: the centre of target voxel 0 is the mean of source centres 10 and 14
    assert down.translation[2] == 12.0 and down.voxel_to_world((0, 0, 0))[2] == 12.0
    assert down.world_to_voxel((0, 0, 28))[2] == 2.0
    up = ResampledVolume(src, (1, 1, 2))
    assert up.translation[2] == 9.0 and up.spatial_shape[2] == 12
    # the physical extent (voxel edges) is kept: 8 .. 32 nm
    for vol in (src, down, up):
        edge0 = vol.translation[2] - vol.scale[2] / 2
        assert (edge0, edge0 + vol.spatial_shape[2] * vol.scale[2]) == (8.0, 32.0)
    assert up.roi == ((0.0, 0.0, 9.0), (1.0, 1.0, 33.0))  # roi = (translation, translation + shape * scale)


def test_matches_the_ngff_pyramid(tmp_path):
    data = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    write_volume(tmp_path / "p.zarr", data, scale=(8, 4, 4), translation=(10, 20, 30), levels=2)
    s0, s1 = open_volume(tmp_path / "p.zarr"), open_volume(tmp_path / "p.zarr", (16, 8, 8))
    view = ResampledVolume(s0, s1.scale)
    assert view.translation == s1.translation and view.spatial_shape == s1.spatial_shape
    np.testing.assert_allclose(view.array[...], s1.array[...])
    same = ResampledVolume(s0, s0.scale)  # identity grid gives the data back
    np.testing.assert_array_equal(same.read((1, 2, 3), (2, 3, 4)), data[1:3, 2:5, 3:7])


def test_reads_only_the_needed_source_box():
    boxes = []

    class Spy(Volume):
        def read(self, start_vox, shape_vox, fill=0):
            boxes.append((tuple(start_vox), tuple(shape_vox)))
            return super().read(start_vox, shape_vox, fill)

    src = Spy(np.zeros((40, 40, 40), np.uint8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), ("z", "y", "x"), "big")
    ResampledVolume(src, (4, 4, 4)).read((5, 5, 5), (2, 2, 2))
    assert boxes == [((10, 10, 10), (4, 4, 4))]
    boxes.clear()
    ResampledVolume(src, (1, 1, 1)).read((20, 20, 20), (4, 4, 4))
    # target voxels 20..23 sit at source index 9.75 .. 11.25, so linear needs source voxels 9 .. 12
    assert boxes == [((9, 9, 9), (4, 4, 4))]


def test_padding_channels_and_lazy_array():
    src = Volume(np.arange(2 * 2 * 4, dtype=np.float32).reshape(2, 2, 4), (2.0, 2.0), (0.0, 0.0),
                 ("c", "y", "x"), "chan", (1, 2))
    up = ResampledVolume(src, (1, 1))
    assert up.shape == (2, 4, 8) and up.ndim == 3 and up.spatial_dims == (1, 2) and up.axes == ("c", "y", "x")
    box = up.read((-1, 6), (2, 4), fill=-1)
    assert box.shape == (2, 2, 4)
    assert (box[:, 0] == -1).all() and (box[:, :, 2:] == -1).all()
    # target y 0 -> source row 0 (clamped); x 6, 7 -> source index 2.75, 3.25 (clamped to 3)
    np.testing.assert_allclose(box[:, 1, :2], [[2.75, 3.0], [10.75, 11.0]])
    assert np.isnan(ResampledVolume(_line([1, 2], dtype=np.uint8), (1, 1, 1)).read((0, 0, 3), (1, 1, 2),
                                                                                  fill=np.nan)[0, 0, 1])
    np.testing.assert_array_equal(up.array[1, :, 0], up.read((1, 0, 0), (1, 4, 1))[0, :, 0])
    assert np.asarray(up.array).shape == (2, 4, 8)
    with pytest.raises(IndexError, match="unit-step slices"):
        up.array[:, ::2]


def test_bad_target_scale():
    with pytest.raises(DataError, match=r"line: resampling needs 3 positive voxel sizes \(nm\) \(got \(1.0, 2.0\)\)"):
        ResampledVolume(_line([1, 2]), (1, 2))
    with pytest.raises(DataError, match="positive voxel sizes"):
        ResampledVolume(_line([1, 2]), (1, 0, 1))
