"""Instance targets from instance labels (boundaries, affinities, distance) and their agglomeration in process."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import variation_of_information

from bioloop.data.ngff import open_volume, write_volume
from bioloop.errors import ConfigError
from bioloop.tasks.segmentation.process import ProcessConfig, process_volume
from bioloop.tasks.segmentation.targets import (InstanceTargets, affinities, boundaries, compact_ids, derive,
                                                distance)

NAN = np.nan


# ----------------------------------------------------------------------------- targets (hand-checked values)


def test_affinities_are_one_inside_an_object_zero_across_borders_and_unknown_off_the_patch():
    ids = np.array([[1, 1, 2, 2, 0],
                    [1, 1, 2, 2, 0],
                    [NAN, 1, 2, 0, 0]], np.float32)
    a = affinities(ids, [(0, 1), (1, 0), (0, -2)])
    np.testing.assert_array_equal(a[0], [[1, 0, 1, 0, NAN],
                                         [1, 0, 1, 0, NAN],
                                         [NAN, 0, 0, 0, NAN]])  # background-background is 0, not 1
    np.testing.assert_array_equal(a[1], [[1, 1, 1, 1, 0],
                                         [NAN, 1, 1, 0, 0],
                                         [NAN, NAN, NAN, NAN, NAN]])
    np.testing.assert_array_equal(a[2], [[NAN, NAN, 0, 0, 0],  # u and u - 2 along x
                                         [NAN, NAN, 0, 0, 0],
                                         [NAN, NAN, NAN, 0, 0]])


def test_boundaries_mark_object_voxels_next_to_another_id_and_are_unknown_next_to_unannotated():
    ids = np.array([[1, 1, 2, 2, 0],
                    [1, 1, 2, 2, 0],
                    [NAN, 1, 2, 0, 0]], np.float32)
    np.testing.assert_array_equal(boundaries(ids), [[0, 1, 1, 1, 0],
                                                    [NAN, 1, 1, 1, 0],
                                                    [NAN, 1, 1, 0, 0]])
    wide = np.zeros((1, 9), np.float32)
    wide[0, :5], wide[0, 5:] = 1, 2
    np.testing.assert_array_equal(boundaries(wide, 2)[0], [0, 0, 0, 1, 1, 1, 1, 0, 0])


def test_distance_target_grows_inwards_from_each_objects_own_border():
    ids = np.zeros((7, 9), np.float32)
    ids[1:6, 1:5], ids[1:6, 5:8] = 1, 2  # two touching objects inside background
    d = distance(ids, 2.0)
    edge, inner = np.tanh(0.5), np.tanh(1.0)  # d = 1 on the border layer, 2 one voxel in
    np.testing.assert_allclose(d[3], [0, edge, inner, inner, edge, edge, inner, edge, 0], rtol=1e-6)
    assert d[0].max() == 0
    # an object cut by the patch border: its distances there are unknown, not guessed
    cut = np.ones((3, 8), np.float32)
    assert np.isnan(distance(cut, 2.0)).any() and not np.isnan(distance(ids, 2.0)).any()


def test_patch_ids_are_compacted_so_large_label_values_stay_exact_in_float32():
    values = np.array([[0, 2 ** 40 + 1, 2 ** 40 + 2], [2 ** 40 + 2, 0, 7]], np.uint64)
    out = compact_ids(values, np.array([[True, True, True], [True, True, False]]))
    np.testing.assert_array_equal(out, [[0, 2, 3], [3, 0, NAN]])


def test_channels_and_derive_agree_for_every_kind():
    ids = np.zeros((6, 6), np.float32)
    ids[:, :3], ids[:, 3:] = 1, 2
    for kind, n in (("affinities", 3), ("boundaries", 2), ("distance", 1)):
        t = InstanceTargets(kind=kind)
        assert derive(ids, t).shape == (n, 6, 6) and len(t.channels("cell", 2)) == n
    long = InstanceTargets(kind="affinities", offsets=[(0, 1), (1, 0), (0, 4)], foreground=False)
    assert long.channels("cell", 2) == ["cell_aff0", "cell_aff1", "cell_aff2"]


def test_config_refuses_instance_targets_without_instance_labels_or_with_wrong_offsets(tmp_path):
    from bioloop.config.loader import load_config

    cfg = tmp_path / "c.py"
    cfg.write_text("classes = ['cell']\nlabel_layout = 'per_class'\n"
                   "instance_targets = {'kind': 'affinities', 'offsets': [(0, 0, 1)]}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    text = str(err.value)
    assert "instance_targets: needs instance labels, label_layout = 'instances' (got 'per_class')" in text
    assert "instance_targets.offsets: 2D patches need 2 numbers per offset (got (0, 0, 1))" in text


# ----------------------------------------------------------------------------- process: agglomeration


def _cells(shape=(6, 40, 40), n=10, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, (n, 3)) * shape
    grid = np.indices(shape).reshape(3, -1).T
    labels = (np.argmin(((grid[:, None] - points[None]) ** 2).sum(-1), 1) + 1).reshape(shape)
    return labels.astype(np.float32)


def _process(tmp_path, truth, targets, name, **settings):
    channels = derive(truth, targets)
    if targets.kind == "distance":  # unknown only at the border of this toy volume: deep inside
        channels = np.where(np.isnan(channels), 1.0, channels)
    for ch, values in zip(targets.channels("cell", 3), np.nan_to_num(channels)):
        write_volume(tmp_path / f"{name}.zarr" / ch, values.astype(np.float32), scale=(8, 8, 8),
                     translation=(0, 0, 0), overwrite=True)
    out = process_volume(ProcessConfig(**settings), ["cell"], input=str(tmp_path / f"{name}.zarr"),
                         output=str(tmp_path / f"{name}_out.zarr"), targets=targets.state(3), show_progress=False,
                         overwrite=True)
    vol = open_volume(out / "cell")
    return vol.read((0, 0, 0), vol.spatial_shape)


@pytest.mark.parametrize("kind, settings", [
    ("affinities", {}),
    ("affinities", {"agglomeration": "watershed"}),
    ("boundaries", {}),
    ("distance", {}),
])
def test_ideal_targets_give_back_the_instances_blockwise_across_block_faces(tmp_path, kind, settings):
    truth = _cells()
    truth[:, :4] = 0  # some background
    extra = {"offsets": [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 4), (0, 4, 0)]} if kind == "affinities" else {}
    targets = InstanceTargets(kind=kind, **extra)
    labels = _process(tmp_path, truth, targets, "p", block_shape=(3, 16, 16), **settings)
    assert labels.dtype == np.uint32
    assert len(np.unique(labels)) == len(np.unique(truth))  # no object split by the 3 x 3 x 3 blocks
    assert np.array_equal(labels == 0, truth == 0)
    splits, merges = variation_of_information(truth.astype(int), labels.astype(int))
    # exact for the mutex watershed; a seeded watershed splits the two-voxel border plateau between
    # touching objects by flooding order, so a few border voxels change sides (0.22 on this volume,
    # the same whole-volume as blockwise)
    assert splits + merges < (1e-9 if kind == "affinities" and not settings else 0.3)
    again = _process(tmp_path, truth, targets, "p", block_shape=(3, 16, 16), **settings)
    assert np.array_equal(labels, again)  # ids stable across runs
    ids = labels[labels > 0]
    assert ids.min() == 1 and ids.max() == len(np.unique(ids))  # consecutive


def test_mutex_watershed_merges_fragments_across_faces_only_where_the_affinity_says_so(tmp_path):
    truth = np.ones((1, 8, 16), np.float32)
    truth[:, :, 8:] = 2  # the border lies exactly on the block face at x = 8
    targets = InstanceTargets(kind="affinities", foreground=False)
    labels = _process(tmp_path, truth, targets, "m", block_shape=(1, 8, 4))
    assert len(np.unique(labels[:, :, :8])) == 1 and len(np.unique(labels[:, :, 8:])) == 1
    assert labels[0, 0, 0] != labels[0, 0, 15]


def test_affinities_without_a_nearest_offset_along_an_axis_are_refused(tmp_path):
    targets = InstanceTargets(kind="affinities", offsets=[(1, 0, 0), (0, 1, 0), (0, 0, 3)])
    with pytest.raises(ConfigError, match=r"instance_targets.offsets: the agglomeration needs the nearest-neighbour "
                                          r"offset along every axis .*add \(0, 0, 1\)"):
        _process(tmp_path, _cells((2, 8, 8), 2), targets, "o")


def test_a_missing_mwatershed_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "mwatershed":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(ConfigError, match="'mutex_watershed' needs the mwatershed package.*pip install mwatershed"):
        _process(tmp_path, _cells((1, 8, 8), 2), InstanceTargets(kind="affinities"), "x")


# ----------------------------------------------------------------------------- training patches


def test_training_and_validation_patches_carry_targets_derived_after_augmentation(tmp_path):
    from bioloop.config.loader import load_config
    from bioloop.data.synthetic import make_cells_dataset
    from bioloop.tasks.segmentation.task import TASK

    data = make_cells_dataset(tmp_path / "data", shape=(1, 48, 48), cell_size=10.0)
    cfg_path = tmp_path / "c.py"
    cfg_path.write_text(f"datasplit_path = {data.datasplit_path!r}\nclasses = ['cell']\nlabel_layout = 'instances'\n"
                        "input_array_info = {'shape': (1, 16, 16), 'scale': (8, 8, 8)}\n"
                        "instance_targets = {'kind': 'affinities', 'offsets': [(0, 1), (1, 0), (0, 3)], "
                        "'foreground': False}\n"
                        "spatial_transforms = {'mirror': {'axes': {'x': 1.0}}, 'transpose': {'axes': ['x', 'y']}}\n")
    cfg = load_config(cfg_path)
    train, val = TASK.build_datasets(cfg)
    assert TASK.build_model(cfg).out_channels == 3
    assert TASK.checkpoint_extras(cfg)["classes"] == ["cell_aff0", "cell_aff1", "cell_aff2"]
    sample = train[(0, 7)]
    target = sample["target"].numpy()
    assert target.shape == (3, 16, 16)
    # every derived value is 0/1 or unknown (NaN) where the offset leaves the patch
    assert set(np.unique(target[np.isfinite(target)])) == {0.0, 1.0}
    assert np.isnan(target[2][:, -3:]).all() and np.isfinite(target[2][:, :-3]).all()
    assert 0 < np.nanmean(target[0]) < 1  # dense cells: mostly connected, cut at the borders
    tile = val[0]["target"].numpy()  # validation tiles: the same targets, no augmentation
    crop = open_volume(f"{data.zarr_path}/labels/crop2")
    _, offset = val.tiles[0]
    ids = compact_ids(crop.read(offset, (1, 16, 16))[0], np.ones((16, 16), bool))
    np.testing.assert_array_equal(tile, affinities(ids, [(0, 1), (1, 0), (0, 3)]))


def test_model_out_channels_must_match_the_derived_channels(tmp_path):
    from bioloop.config.loader import load_config
    from bioloop.tasks.segmentation.task import TASK

    cfg = tmp_path / "c.py"
    cfg.write_text("classes = ['cell']\nlabel_layout = 'instances'\ninstance_targets = {'kind': 'boundaries'}\n"
                   "model_kwargs = {'depth': 2, 'base_channels': 2, 'out_channels': 1}\n")
    with pytest.raises(ConfigError, match=r"out_channels must equal the number of output channels "
                                          r"\(2: \['cell_fg', 'cell_boundary'\]\) \(got 1\)"):
        TASK.build_model(load_config(cfg))
