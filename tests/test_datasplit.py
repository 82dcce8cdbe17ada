"""The csc datasplit CSV: round trip, path resolution and every error."""

from __future__ import annotations

import os

import pytest

from bioloop.data.datasplit import CropEntry, read_datasplit, write_datasplit
from bioloop.errors import DataError

ROW = '"train","/data/c.zarr","recon-1/em/fibsem-uint8","/data/c.zarr","recon-1/labels/groundtruth/crop1/[nuc,mito]"'


def _csv(tmp_path, text: str):
    path = tmp_path / "datasplit.csv"
    path.write_text(text)
    return path


def test_reads_csc_rows(tmp_path):
    path = _csv(tmp_path, ROW + "\n\n" + ROW.replace('"train"', '"validate"').replace("crop1/[nuc,mito]", "crop7/[er]"))
    first, second = read_datasplit(path)
    assert first == CropEntry("train", "/data/c.zarr/recon-1/em/fibsem-uint8",
                              "/data/c.zarr/recon-1/labels/groundtruth/crop1", ("nuc", "mito"))
    assert second.usage == "validate" and second.classes == ("er",)
    assert second.gt_path.endswith("crop7")


def test_round_trip_writes_the_csc_format(tmp_path):
    entries = [
        CropEntry("train", "/data/c.zarr/recon-1/em/fibsem-uint8", "/data/c.zarr/recon-1/labels/groundtruth/crop1",
                  ["nuc", "mito"]),
        CropEntry("validate", "s3://bucket/d.zarr/recon-1/em/fibsem-uint8",
                  "s3://bucket/d.zarr/recon-1/labels/groundtruth/crop2", ("nuc",)),
    ]
    path = tmp_path / "sub" / "datasplit.csv"
    write_datasplit(path, entries)
    lines = path.read_text().splitlines()
    assert lines[0] == ROW
    assert lines[1] == ('"validate","s3://bucket/d.zarr","recon-1/em/fibsem-uint8","s3://bucket/d.zarr",'
                        '"recon-1/labels/groundtruth/crop2/[nuc]"')
    assert read_datasplit(path) == entries
    write_datasplit(path, entries[:1])  # replaces the file, leaves no temp file behind
    assert read_datasplit(path) == entries[:1]
    assert os.listdir(path.parent) == ["datasplit.csv"]


def test_relative_roots_resolve_against_the_csv_folder(tmp_path):
    path = _csv(tmp_path, '"train","data/c.zarr","raw","../c.zarr","crop1/[nuc]"\n')
    entry = read_datasplit(path)[0]
    assert entry.raw_path == f"{tmp_path}/data/c.zarr/raw"
    assert entry.gt_path == f"{tmp_path}/../c.zarr/crop1"


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        read_datasplit(tmp_path / "none.csv")
    text = str(err.value)
    assert str(tmp_path / "none.csv") in text and "bioloop synthetic DEST" in text and "datasplit_path" in text


@pytest.mark.parametrize("text,message", [
    ("", "datasplit file has no rows"),
    ("\n  \n", "datasplit file has no rows"),
    (ROW + '\n"train","a.zarr","raw"\n', r"datasplit.csv:2: a datasplit row needs 5 columns .*\(got 3\)"),
    (ROW.replace('"train"', '"test"'), r"datasplit.csv:1: unknown usage \(got 'test'\)"),
    (ROW.replace("/[nuc,mito]", ""), r":1: the ground-truth column has no \[class,...\] list"),
    (ROW.replace("[nuc,mito]", "[]"), r":1: the ground-truth class list is empty"),
])
def test_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_datasplit(_csv(tmp_path, text))


def test_write_rejects_unknown_usage(tmp_path):
    with pytest.raises(DataError, match=r"unknown usage for /x.zarr/crop1 \(got 'val'\)"):
        write_datasplit(tmp_path / "d.csv", [CropEntry("val", "/x.zarr/raw", "/x.zarr/crop1", ("nuc",))])
    assert not (tmp_path / "d.csv").exists()
