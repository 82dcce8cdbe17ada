"""Datasplit generation: crawling CellMap/Allen layouts, the by-dataset split and every error."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from bioloop.data.datasplit import CropEntry, read_datasplit
from bioloop.data.datasplit_gen import (DATASPLIT_OPTIONS, make_datasplit, parse_force_all_classes,
                                        parse_scale, summarize)
from bioloop.data.ngff import write_volume
from bioloop.errors import ConfigError, DataError

TEMPLATE = "{dataset}/{dataset}.zarr/recon-1/{name}"
TINY = np.zeros((1, 2, 2), np.uint8)


def _tree(root, layout: dict, scale=(8.0, 8.0, 8.0), zarr_format=3, label_scale=None):
    """layout: dataset -> crop -> classes; writes tiny OME-NGFF raw and label groups in the CellMap layout."""
    for ds, crops in layout.items():
        base = root / ds / f"{ds}.zarr" / "recon-1"
        write_volume(base / "em" / "fibsem-uint8", TINY, scale=scale, zarr_format=zarr_format)
        for crop, classes in crops.items():
            for cls in classes:
                s = (label_scale or {}).get((ds, crop), scale)
                write_volume(base / "labels" / "groundtruth" / crop / cls, TINY, scale=s,
                             zarr_format=zarr_format, labels=True)
    return str(root / TEMPLATE)


def _by_dataset(entries):
    usage = {}
    for e in entries:
        usage.setdefault(e.raw_path.split("/recon-1/")[0], set()).add(e.usage)
    return usage


FIVE = {f"jrc_{k}": {f"crop{i}": ["nuc", "mito"] for i in range(1, 4)} for k in "abcde"}


def test_splits_by_dataset_writes_csv_and_reads_back(tmp_path):
    search = _tree(tmp_path, FIVE)
    csv = tmp_path / "split.csv"
    entries = make_datasplit(search_path=search, classes=["nuc", "mito"], csv_path=str(csv))
    assert len(entries) == 15
    usage = _by_dataset(entries)
    assert len(usage) == 5 and all(len(u) == 1 for u in usage.values())  # no dataset in both usages
    assert {u for (u,) in usage.values()} == {"train", "validate"}
    first = next(e for e in entries if "jrc_a" in e.raw_path and e.gt_path.endswith("crop1"))
    assert first.raw_path == str(tmp_path / "jrc_a/jrc_a.zarr/recon-1/em/fibsem-uint8")
    assert first.gt_path == str(tmp_path / "jrc_a/jrc_a.zarr/recon-1/labels/groundtruth/crop1")
    assert first.classes == ("nuc", "mito")
    assert read_datasplit(csv) == list(entries)


def test_same_seed_same_split_and_seed_matters(tmp_path):
    search = _tree(tmp_path, FIVE)
    run = lambda seed: [e.usage for e in make_datasplit(search_path=search, classes=["nuc"], random_seed=seed)]  # noqa
    assert run(3) == run(3)
    assert len({tuple(run(s)) for s in range(8)}) > 1


def test_always_one_validation_and_one_training_dataset(tmp_path):
    search = _tree(tmp_path, {"a": {"crop1": ["nuc"]}, "b": {"crop1": ["nuc"]}})
    for seed in range(10):
        for prob in (0.01, 0.99):
            entries = make_datasplit(search_path=search, classes=["nuc"], validation_prob=prob, random_seed=seed)
            assert sorted(e.usage for e in entries) == ["train", "validate"]
    entries = make_datasplit(search_path=search, classes=["nuc"], validation_prob=0)
    assert [e.usage for e in entries] == ["train", "train"]


@pytest.mark.parametrize("prob", [1.0, 1.5, -0.1, "0.3"])
def test_bad_validation_prob_is_a_config_error(tmp_path, prob):
    with pytest.raises(ConfigError, match=r"validation_prob: must be at least 0 and below 1 \(got"):
        make_datasplit(search_path=str(tmp_path / TEMPLATE), classes=["nuc"], validation_prob=prob)


def test_single_dataset_splits_crops_and_warns(tmp_path):
    search = _tree(tmp_path, {"a": {f"crop{i}": ["nuc"] for i in range(4)}})
    entries = make_datasplit(search_path=search, classes=["nuc"], validation_prob=0.3)
    assert {e.usage for e in entries} == {"train", "validate"}
    assert any("correlated" in n for n in entries.notes)
    assert "correlated" in summarize(entries)


def test_one_crop_trains_and_notes_no_validation(tmp_path):
    search = _tree(tmp_path, {"a": {"crop1": ["nuc"]}})
    entries = make_datasplit(search_path=search, classes=["nuc"])
    assert [e.usage for e in entries] == ["train"]
    assert any("no validation crops" in n for n in entries.notes)


def test_crops_without_requested_classes_are_skipped_and_reported(tmp_path):
    search = _tree(tmp_path, {"a": {"crop1": ["nuc", "er"], "crop2": ["er"]}, "b": {"crop1": ["mito"]}})
    entries = make_datasplit(search_path=search, classes=["mito", "nuc"])
    assert sorted((e.gt_path[-5:], e.classes) for e in entries) == [("crop1", ("mito",)), ("crop1", ("nuc",))]
    assert "skipped 1 crops that annotate none of ['mito', 'nuc']" in summarize(entries)


MIXED = {"a": {"crop1": ["nuc", "mito"], "crop2": ["nuc"]}, "b": {"crop1": ["nuc", "mito"], "crop2": ["mito"]},
         "c": {"crop1": ["nuc"]}, "d": {"crop1": ["nuc", "mito"]}}


def test_force_all_classes_true_keeps_complete_crops_only(tmp_path):
    search = _tree(tmp_path, MIXED)
    entries = make_datasplit(search_path=search, classes=["nuc", "mito"], force_all_classes=True)
    assert len(entries) == 3 and all(e.classes == ("nuc", "mito") for e in entries)
    assert {e.usage for e in entries} == {"train", "validate"}
    assert any("force_all_classes=True" in n for n in entries.notes)


@pytest.mark.parametrize("strict", ["train", "validate"])
def test_force_all_classes_per_usage(tmp_path, strict):
    search = _tree(tmp_path, MIXED)
    for seed in range(6):
        entries = make_datasplit(search_path=search, classes=["nuc", "mito"], force_all_classes=strict,
                                 random_seed=seed, validation_prob=0.5)
        assert all(e.classes == ("nuc", "mito") for e in entries if e.usage == strict)
        assert all(len(u) == 1 for u in _by_dataset(entries).values())
        other = {e.raw_path.split("/")[-5] for e in entries if e.usage != strict}
        assert "c" in other  # a dataset with no complete crop goes to the other usage
        assert {e.usage for e in entries} == {"train", "validate"}


def test_force_all_classes_single_dataset_moves_incomplete_crops(tmp_path):
    search = _tree(tmp_path, {"a": {"crop1": ["nuc", "mito"], "crop2": ["nuc"], "crop3": ["nuc", "mito"]}})
    entries = make_datasplit(search_path=search, classes=["nuc", "mito"], force_all_classes="train")
    assert next(e for e in entries if e.gt_path.endswith("crop2")).usage == "validate"
    assert len(entries) == 3


def test_force_all_classes_without_training_candidates_is_an_error(tmp_path):
    search = _tree(tmp_path, {"a": {"crop1": ["nuc"]}, "b": {"crop1": ["mito"]}})
    with pytest.raises(DataError, match="no crops left for training"):
        make_datasplit(search_path=search, classes=["nuc", "mito"], force_all_classes="train")
    with pytest.raises(DataError, match=r"0 annotate all of \['nuc', 'mito'\].*force_all_classes=False"):
        make_datasplit(search_path=search, classes=["nuc", "mito"], force_all_classes=True)
    with pytest.raises(ConfigError, match="force_all_classes: unknown value"):
        make_datasplit(search_path=search, classes=["nuc"], force_all_classes="both")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_filter_by_scale_reads_ngff_metadata(tmp_path, zarr_format):
    fine = {("a", "crop1"): (4.0, 4.0, 4.0), ("b", "crop1"): (8.0, 4.0, 4.0)}
    search = _tree(tmp_path, {"a": {"crop1": ["nuc"], "crop2": ["nuc"]}, "b": {"crop1": ["nuc"]}},
                   scale=(16.0, 16.0, 16.0), zarr_format=zarr_format, label_scale=fine)
    kept = lambda scale: sorted(e.gt_path.split("/")[-6] + e.gt_path[-1]  # noqa: E731
                                for e in make_datasplit(search_path=search, classes=["nuc"], filter_by_scale=scale))
    assert kept(None) == ["a1", "a2", "b1"]
    assert kept(8) == ["a1", "b1"]
    assert kept(4) == ["a1"]
    assert kept((8, 4, 4)) == ["a1", "b1"]
    assert kept(16.0) == ["a1", "a2", "b1"]
    with pytest.raises(DataError, match=r"0 have labels at 2 nm or finer.*raise filter_by_scale"):
        kept(2)
    with pytest.raises(DataError, match="filter_by_scale has 2 values but the label has 3 spatial axes"):
        kept((8, 8))
    with pytest.raises(ConfigError, match="filter_by_scale: needs one positive voxel size"):
        kept(-1)


def test_dataset_and_crop_patterns(tmp_path):
    search = _tree(tmp_path, {"jrc_a": {"crop1": ["nuc"], "crop12": ["nuc"], "crop2": ["nuc"]},
                              "jrc_b": {"crop1": ["nuc"]}, "other": {"crop1": ["nuc"]}})
    pick = lambda **kw: sorted(e.gt_path.split("/")[-6] + "/" + e.gt_path.split("/")[-1]  # noqa: E731
                               for e in make_datasplit(search_path=search, classes=["nuc"], **kw))
    assert pick(datasets=["jrc_*"]) == ["jrc_a/crop1", "jrc_a/crop12", "jrc_a/crop2", "jrc_b/crop1"]
    assert pick(datasets=["jrc_b", "other"]) == ["jrc_b/crop1", "other/crop1"]
    assert pick(datasets=["jrc_a"], crops=["crop1*"]) == ["jrc_a/crop1", "jrc_a/crop12"]
    assert pick(crops=["crop2"]) == ["jrc_a/crop2"]


def test_synthetic_datasets_end_to_end(tmp_path):
    from bioloop.data.synthetic import make_em_dataset

    for name in ("cell_a", "cell_b"):
        make_em_dataset(tmp_path / name, shape=(2, 32, 48))
    entries = make_datasplit(search_path=str(tmp_path / "{dataset}/synthetic_em.zarr/recon-1/{name}"),
                             classes=["nuc", "mito"])
    assert len(entries) == 12
    assert sorted(_by_dataset(entries).values()) == [{"train"}, {"validate"}]
    assert [e.classes for e in entries if e.gt_path.endswith("crop4")] == [("nuc",), ("nuc",)]


def test_fsspec_url_is_crawled(tmp_path):
    search = _tree(tmp_path, {"a": {"crop1": ["nuc"]}, "b": {"crop1": ["nuc"]}})
    entries = make_datasplit(search_path="file://" + search, classes=["nuc"], filter_by_scale=8)
    assert len(entries) == 2
    assert all(e.raw_path.startswith("file://") and e.gt_path.startswith("file://") for e in entries)
    assert entries[0].gt_path == f"file://{tmp_path}/a/a.zarr/recon-1/labels/groundtruth/crop1"


def test_allen_layout_pairs_images_with_gt(tmp_path):
    for name in ("img1.tif", "img1_GT.tif", "img1_CM.tif", "img2.ome.tif", "img2_GT.ome.tif", "img3.tif",
                 "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    csv = tmp_path / "out" / "split.csv"
    entries = make_datasplit(search_path=str(tmp_path), classes=["cell"], layout="allen", csv_path=csv)
    assert sorted((e.raw_path, e.gt_path, e.classes) for e in entries) == [
        (str(tmp_path / "img1.tif"), str(tmp_path / "img1_GT.tif"), ("cell",)),
        (str(tmp_path / "img2.ome.tif"), str(tmp_path / "img2_GT.ome.tif"), ("cell",))]
    assert sorted(e.usage for e in entries) == ["train", "validate"]
    assert any("skipped 1 images without a matching _GT" in n for n in entries.notes)
    assert any("1 of 2 images have a _CM cost map" in n for n in entries.notes)
    assert read_datasplit(csv) == list(entries)
    with pytest.raises(ConfigError, match="filter_by_scale: needs OME-NGFF metadata"):
        make_datasplit(search_path=str(tmp_path), classes=["cell"], layout="allen", filter_by_scale=8)


def test_allen_empty_folder_error(tmp_path):
    with pytest.raises(DataError) as info:
        make_datasplit(search_path=str(tmp_path), classes=["cell"], layout="allen")
    assert str(info.value).startswith(f"{tmp_path}: found no usable crops: 0 tif files at")
    assert "name_GT.tif" in str(info.value)


def test_empty_results_name_the_search_and_each_step(tmp_path):
    missing = str(tmp_path / "nowhere" / TEMPLATE)
    with pytest.raises(DataError) as info:
        make_datasplit(search_path=missing, classes=["nuc"])
    text = str(info.value)
    assert text.startswith(f"{missing}: found no usable crops: 0 datasets with raw data at ")
    assert "nowhere/*/*.zarr/recon-1/em/fibsem-uint8" in text and "check search_path, raw_name" in text

    search = _tree(tmp_path, {"a": {"crop1": ["nuc", "mito"]}})
    with pytest.raises(DataError, match=r"1 datasets with raw data .*; 0 crops at .*check crop_name"):
        make_datasplit(search_path=search, classes=["nuc"], crops=["crop9"])
    with pytest.raises(DataError, match=r"1 crops at .*; 0 annotate at least one of \['er'\]; "
                                        r"check classes; labels found: \['mito', 'nuc'\]"):
        make_datasplit(search_path=search, classes=["er"])


def test_dry_run_and_no_csv_path_write_nothing(tmp_path):
    search = _tree(tmp_path, {"a": {"crop1": ["nuc"]}, "b": {"crop1": ["nuc"]}})
    csv = tmp_path / "split.csv"
    assert len(make_datasplit(search_path=search, classes=["nuc"], csv_path=csv, dry_run=True)) == 2
    assert len(make_datasplit(search_path=search, classes=["nuc"])) == 2
    assert not csv.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"search_path": "data/{dataset}"}, "search_path: needs the {name} placeholder"),
    ({"search_path": "data/{sample}/{name}"}, "search_path: needs the {name} placeholder"),
    ({"search_path": ""}, "search_path: is empty"),
    ({"classes": []}, "classes: no classes given"),
    ({"layout": "cellpose"}, "layout: unknown layout"),
    ({"crop_name": "labels/{crop}_{label}"}, "crop_name: must contain {crop} and end with '/{label}'"),
    ({"crops": ["a/b"]}, "crops: patterns match one path component"),
])
def test_bad_options_are_config_errors(kwargs, message):
    options = {"search_path": "data/{dataset}/{name}", "classes": ["nuc"], **kwargs}
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        make_datasplit(**options)


def test_summary_counts_per_usage_and_class():
    entries = [CropEntry("train", "/d/a.zarr/raw", "/d/a.zarr/c1", ("nuc", "mito")),
               CropEntry("train", "/d/a.zarr/raw", "/d/a.zarr/c2", ("nuc",)),
               CropEntry("validate", "/d/b.zarr/raw", "/d/b.zarr/c1", ("mito",))]
    assert summarize(entries) == (
        "3 crops: train 2 (from 1 raw images), validate 1 (from 1 raw images)\n"
        "  class     train  validate\n"
        "  nuc           2         0\n"
        "  mito          1         1")


def test_options_table_matches_the_function():
    params = inspect.signature(make_datasplit).parameters
    assert set(DATASPLIT_OPTIONS) == set(params) - {"storage_options"}
    for name, (convert, default, help_text) in DATASPLIT_OPTIONS.items():
        assert callable(convert) and help_text
        if name not in ("csv_path", "search_path", "classes", "datasets", "crops"):
            assert default == params[name].default, name
    assert DATASPLIT_OPTIONS["classes"][0]("nuc, mito") == ["nuc", "mito"]
    assert [parse_force_all_classes(t) for t in ("True", "false", "train", "VALIDATE")] == [
        True, False, "train", "validate"]
    with pytest.raises(ValueError):
        parse_force_all_classes("all")
    assert parse_scale("8") == 8.0 and parse_scale("8,4,4") == (8.0, 4.0, 4.0) and parse_scale("none") is None
