"""`bioloop process`: thresholds, blockwise connected components merged across blocks, watershed, min_size."""

from __future__ import annotations

import numpy as np
import pytest

from bioloop.data.ngff import open_volume, write_volume
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.segmentation.process import ProcessConfig, _final_ids, process_volume

SCALE, TRANSLATION = (8.0, 4.0, 4.0), (16.0, 40.0, 80.0)


def _write(root, **classes):
    for name, p in classes.items():
        write_volume(f"{root}/pred.zarr/{name}", np.asarray(p, np.float32), scale=SCALE, translation=TRANSLATION)
    return f"{root}/pred.zarr"


def _run(tmp_path, cfg, classes, name="out.zarr", **kwargs):
    classes = [classes] if isinstance(classes, str) else classes
    out = process_volume(cfg, list(classes), input=str(tmp_path / "pred.zarr"), output=str(tmp_path / name),
                         show_progress=False, **kwargs)
    vols = {c: open_volume(out / c) for c in classes}
    return {c: v.read((0, 0, 0), v.spatial_shape) for c, v in vols.items()}, vols


def test_objects_crossing_block_faces_and_corners_get_one_id(tmp_path):
    p = np.zeros((4, 16, 16))
    p[0:4, 5:11, 2:4] = 0.9  # crosses the y block face at 8 and the z face at 2
    p[1, 7, 12] = p[1, 8, 13] = 0.9  # touch only through an edge across the block corner (y 8, x 8 ... 13)
    p[1, 7, 7] = p[1, 8, 8] = 0.9  # touch only diagonally, right at the corner of four blocks
    _write(tmp_path, a=p)
    block = (2, 8, 8)
    labels, vols = _run(tmp_path, ProcessConfig(instance_classes=["a"], block_shape=block, connectivity=1), "a")
    a = labels["a"]
    assert a.dtype == np.uint32 and vols["a"].scale == SCALE and vols["a"].translation == TRANSLATION
    assert len(np.unique(a[p > 0.5])) == 5  # the bar is one object; the diagonal pairs are 2 objects each
    assert len(np.unique(a[0:4, 5:11, 2:4])) == 1
    assert sorted(np.unique(a)) == list(range(6))  # consecutive ids
    labels, _ = _run(tmp_path, ProcessConfig(instance_classes="all", block_shape=block, connectivity=2), "a",
                     name="o2.zarr")
    assert len(np.unique(labels["a"][p > 0.5])) == 3  # 18-connectivity joins the diagonal pairs


def test_hundreds_of_objects_keep_distinct_ids_beyond_255(tmp_path):
    p = np.zeros((2, 40, 40))
    p[0, ::2, ::2] = 0.8  # 400 single-voxel objects
    _write(tmp_path, a=p)
    labels, _ = _run(tmp_path, ProcessConfig(instance_classes=["a"], block_shape=(2, 16, 16)), "a")
    a = labels["a"]
    assert a.dtype == np.uint32
    assert a.max() == 400 and len(np.unique(a)) == 401
    labels, _ = _run(tmp_path, ProcessConfig(instance_classes=["a"], dtype="uint64"), "a", name="o64.zarr")
    assert labels["a"].dtype == np.uint64 and labels["a"].max() == 400


def test_min_size_uses_sizes_counted_across_blocks(tmp_path):
    p = np.zeros((2, 16, 16))
    p[0, 6:10, 6:8] = 0.9  # 8 voxels split 4 + 4 by the block face at y = 8
    p[0, 1, 1] = 0.9  # 1 voxel
    p[1, 12:15, 12] = 0.9  # 3 voxels
    _write(tmp_path, inst=p, sem=p)
    cfg = ProcessConfig(instance_classes=["inst"], min_size=5, block_shape=(2, 8, 8))
    labels, _ = _run(tmp_path, cfg, ["inst", "sem"])
    assert sorted(np.unique(labels["inst"])) == [0, 1]
    assert np.count_nonzero(labels["inst"]) == 8
    sem = labels["sem"]
    assert sem.dtype == np.uint8 and set(np.unique(sem)) == {0, 1}
    np.testing.assert_array_equal(sem, labels["inst"] > 0)  # small objects go from semantic classes too


def test_thresholds_per_class_and_plain_semantic_output(tmp_path):
    p = np.full((1, 4, 4), 0.5)
    _write(tmp_path, low=p, high=p)
    labels, _ = _run(tmp_path, ProcessConfig(thresholds={"low": 0.3, "high": 0.7}), ["low", "high"])
    assert labels["low"].dtype == np.uint8 and labels["low"].min() == 1
    assert labels["high"].max() == 0


def test_watershed_splits_two_touching_balls(tmp_path):
    z, y, x = np.mgrid[0:12, 0:16, 0:28]
    p = np.zeros((12, 16, 28), np.float32)
    one = ((z - 6) * 2) ** 2 + (y - 8) ** 2 + (x - 8) ** 2 <= 36
    two = ((z - 6) * 2) ** 2 + (y - 8) ** 2 + (x - 18) ** 2 <= 36
    p[one | two] = 1.0
    _write(tmp_path, a=p)
    plain, _ = _run(tmp_path, ProcessConfig(instance_classes=["a"]), "a")
    assert plain["a"].max() == 1  # connected components alone see one object
    cfg = ProcessConfig(instance_classes=["a"], watershed=True, min_distance=16.0)
    split, _ = _run(tmp_path, cfg, "a", name="ws.zarr")
    a = split["a"]
    assert a.dtype == np.uint32 and a.max() == 2
    assert a[6, 8, 6] != a[6, 8, 20] and a[6, 8, 6] > 0 and a[6, 8, 20] > 0
    np.testing.assert_array_equal(a > 0, p > 0.5)


def test_watershed_refuses_volumes_over_its_budget(tmp_path):
    _write(tmp_path, a=np.ones((2, 4, 4)))
    cfg = ProcessConfig(instance_classes=["a"], watershed=True, watershed_max_voxels=10)
    with pytest.raises(DataError, match="more than process.watershed_max_voxels"):
        _run(tmp_path, cfg, "a")


def test_process_func_replaces_the_built_in_steps(tmp_path):
    p = np.zeros((2, 6, 6))
    p[0, 0:2, 0:2] = 0.9
    _write(tmp_path, a=p, b=p)
    seen = []

    def split_rows(probabilities, name, scale):
        seen.append((name, probabilities.dtype, scale))
        return (np.arange(probabilities.size).reshape(probabilities.shape) + 300) * (probabilities > 0.5)

    labels, _ = _run(tmp_path, ProcessConfig(instance_classes=["a"], process_func=split_rows), ["a", "b"])
    assert seen == [("a", np.float32, SCALE), ("b", np.float32, SCALE)]
    assert labels["a"].dtype == np.uint32 and sorted(np.unique(labels["a"]))[1:] == [300, 301, 306, 307]
    assert labels["b"].dtype == np.uint8 and labels["b"].sum() == 4


@pytest.mark.parametrize("func, message", [
    (lambda p, name, scale: p[0], "returned labels shaped differently"),
    (lambda p, name, scale: p, "must return integer labels"),
    (lambda p, name, scale: -np.ones(p.shape, int), "returned negative labels"),
    (lambda p, name, scale: np.full(p.shape, 2 ** 40), "returned ids too large for uint32"),
])
def test_process_func_results_are_checked(tmp_path, func, message):
    _write(tmp_path, a=np.ones((1, 3, 3)))
    with pytest.raises(ConfigError, match=message):
        _run(tmp_path, ProcessConfig(instance_classes=["a"], process_func=func), "a")


def test_existing_output_is_not_overwritten(tmp_path):
    _write(tmp_path, a=np.ones((1, 3, 3)))
    _run(tmp_path, ProcessConfig(), "a")
    with pytest.raises(DataError, match="out.zarr: output already exists"):
        _run(tmp_path, ProcessConfig(), "a")
    labels, _ = _run(tmp_path, ProcessConfig(thresholds=1.0), "a", overwrite=True)
    assert labels["a"].max() == 0


def test_missing_class_names_the_input(tmp_path):
    _write(tmp_path, a=np.ones((1, 3, 3)))
    with pytest.raises(DataError, match=r"pred.zarr/b: no such zarr array"):
        _run(tmp_path, ProcessConfig(), ["a", "b"])


def test_section_checks():
    bad = ProcessConfig(thresholds={"a": 1.5}, instance_classes="some", connectivity=4, block_shape=(4, 4),
                        process_func=3, watershed=True)
    problems = bad.check()
    for text in ("thresholds: every threshold", "instance_classes: expected a list",
                 "connectivity: expected 1, 2 or 3", "block_shape: expected 3 entries",
                 "process_func: expected a function"):
        assert any(p.startswith(text) for p in problems), text
    assert ProcessConfig(watershed=True).check()[0].startswith("watershed: only instance classes")
    unknown = ProcessConfig(thresholds={"nuk": 0.4}, instance_classes=["mitto"]).check_against(["nuc", "mito"])
    assert unknown == ["process.thresholds: unknown class 'nuk'; the classes are ['nuc', 'mito']",
                       "process.instance_classes: unknown class 'mitto'; the classes are ['nuc', 'mito']"]
    assert ProcessConfig(instance_classes="all").check() == []


def test_unknown_class_in_the_section_stops_processing(tmp_path):
    _write(tmp_path, a=np.ones((1, 3, 3)))
    with pytest.raises(ConfigError, match="process.instance_classes: unknown class 'b'"):
        _run(tmp_path, ProcessConfig(instance_classes=["b"]), "a")


def test_too_many_objects_for_the_label_type():
    n = 300
    with pytest.raises(DataError, match="300 objects do not fit in uint8 labels"):
        _final_ids(np.zeros((2, 0), np.uint64), np.ones(n + 1), n, 0, np.dtype(np.uint8), "x")


@pytest.mark.parametrize("connectivity", [1, 3])
def test_blockwise_labels_equal_whole_volume_labels(tmp_path, connectivity):
    from scipy import ndimage

    rng = np.random.default_rng(connectivity)
    p = ndimage.gaussian_filter(rng.random((10, 30, 34)), 1.2)
    p = (p - p.min()) / (p.max() - p.min())
    _write(tmp_path, a=p)
    cfg = ProcessConfig(instance_classes=["a"], thresholds=0.62, block_shape=(4, 11, 9), connectivity=connectivity,
                        min_size=4)
    got = _run(tmp_path, cfg, "a")[0]["a"]
    ref, _ = ndimage.label(p > 0.62, ndimage.generate_binary_structure(3, connectivity))
    sizes = np.bincount(ref.ravel())
    ref[sizes[ref] < 4] = 0
    assert ref.max() > 5
    np.testing.assert_array_equal(got > 0, ref > 0)
    pairs = np.unique(np.stack([got[got > 0], ref[ref > 0]]), axis=1)  # same partition, ids consecutive
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1] == got.max()
    assert not list(tmp_path.glob(".bioloop-process-*"))  # the temporary labels are removed


@pytest.mark.parametrize("zarr_format, version", [(2, "0.4"), (3, "0.5")])
def test_instances_are_an_ome_ngff_labels_group_that_ome_zarr_reads(tmp_path, zarr_format, version):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Multiscales, Reader

    p = np.zeros((2, 12, 12))
    p[:, 1:4, 1:4] = p[:, 7:11, 7:11] = 0.9
    _write(tmp_path, cell=p, membrane=p)
    cfg = ProcessConfig(instance_classes=["cell"])
    labels, _ = _run(tmp_path, cfg, ["cell", "membrane"], zarr_format=zarr_format)
    assert labels["cell"].max() == 2 and labels["membrane"].max() == 1
    root = parse_url(str(tmp_path / "out.zarr"))
    nodes = list(Reader(root)())  # the reference OME-NGFF reader (ome-zarr-py, as napari-ome-zarr uses)
    assert Labels in [type(s) for s in nodes[0].specs]
    found = {n.metadata["name"]: n for n in nodes[1:]}
    assert list(found) == ["cell"]  # only instance classes are label images; the semantic mask is an image
    assert {Label, Multiscales} <= {type(s) for s in found["cell"].specs}
    np.testing.assert_array_equal(np.asarray(found["cell"].data[0]), labels["cell"])
    assert parse_url(str(tmp_path / "out.zarr" / "cell")).version == version
    assert (tmp_path / "out.zarr" / ("zarr.json" if zarr_format == 3 else ".zattrs")).is_file()
