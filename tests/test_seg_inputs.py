"""Every input kind training reads also goes through predict, process and evaluate (tif with and without
voxel size, 2D tif, plain zarr arrays, OME-NGFF; s3:// is in test_seg_s3.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
import zarr

from bioloop import api
from bioloop.data.datasplit import CropEntry, write_datasplit
from bioloop.data.ngff import open_volume, write_volume

pytestmark = pytest.mark.slow

CONFIG = """
datasplit_path = "split.csv"
classes = ["cell"]
label_layout = "instances"
input_array_info = {"shape": (1, 32, 32), "scale": (8, 8, 8)}
model_kwargs = {"depth": 2, "base_channels": 4}
batch_size = 2
epochs = 1
iterations_per_epoch = 1
validation_batch_limit = 1
num_workers = 0
process = {"instance_classes": ["cell"]}
"""


def _cells(shape=(3, 40, 48), seed=0):
    """uint8 raw with bright discs (cylinders through z) and their instance ids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    ids = np.zeros(shape[1:], np.uint16)
    for k, (cy, cx) in enumerate([(10, 10), (10, 34), (28, 14), (30, 36)], start=1):
        ids[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(25, 50)] = k
    ids = np.repeat(ids[None], shape[0], 0)
    raw = np.clip(40 + 150 * (ids > 0) + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)
    return raw, ids


def _write(kind, folder, raw, ids):
    """(raw path, labels path, voxel size of the files in nm)."""
    if kind == "ngff":
        write_volume(folder / "img.zarr" / "raw", raw, scale=(8, 8, 8))
        write_volume(folder / "img.zarr" / "labels", ids, scale=(8, 8, 8))
        return str(folder / "img.zarr" / "raw"), str(folder / "img.zarr" / "labels"), (8, 8, 8)
    if kind == "zarr-array":
        zarr.create_array(str(folder / "raw.zarr"), data=raw)
        zarr.create_array(str(folder / "truth.zarr"), data=ids)
        return str(folder / "raw.zarr"), str(folder / "truth.zarr"), (8, 8, 8)
    raw_path, gt_path = folder / "img.tif", folder / "img_GT.tif"
    if kind == "tif-2d":
        tifffile.imwrite(raw_path, raw[0])
        tifffile.imwrite(gt_path, ids[0])
        return str(raw_path), str(gt_path), (8, 8, 8)
    if kind == "tif":
        # 8-bit values in a uint16 file; 3 planes would otherwise be written as RGB
        tifffile.imwrite(raw_path, raw.astype(np.uint16), photometric="minisblack")
        tifffile.imwrite(gt_path, ids, photometric="minisblack")
        return str(raw_path), str(gt_path), (8, 8, 8)
    size = {"ome-tif": 8, "ome-tif-4nm": 4}[kind]
    meta = {"axes": "ZYX", "PhysicalSizeZ": 0.008, "PhysicalSizeY": size / 1e3, "PhysicalSizeX": size / 1e3}
    tifffile.imwrite(raw_path, raw, ome=True, metadata=meta)
    tifffile.imwrite(gt_path, ids, ome=True, metadata=meta)
    return str(raw_path), str(gt_path), (8, size, size)


@pytest.mark.parametrize("kind", ["ome-tif", "ome-tif-4nm", "tif", "tif-2d", "zarr-array", "ngff"])
def test_train_predict_process_evaluate(kind, tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    raw, ids = _cells()
    raw_path, gt_path, scale = _write(kind, tmp_path, raw, ids)
    write_datasplit(tmp_path / "split.csv", [CropEntry("train", raw_path, gt_path, ("cell",)),
                                             CropEntry("validate", raw_path, gt_path, ("cell",))])
    (tmp_path / "cfg.py").write_text(CONFIG)
    assert api.train("cfg.py", quiet=True)["epochs_completed"] == 1
    said = capsys.readouterr().err
    assert ("resampled to (8, 8, 8) nm (factor (1.0, 0.5, 0.5) per axis" in said) == (kind == "ome-tif-4nm")
    assert ("normalization: the training raw (uint16) spans" in said) == (kind == "tif")

    prediction = api.predict("cfg.py", input=raw_path, output="pred.zarr", show_progress=False)
    probs = open_volume(prediction / "cell")
    zoom = [s / 8 for s in scale]  # the model's grid: 8 nm voxels over the same field of view
    assert probs.scale == (8, 8, 8)
    assert probs.spatial_shape == tuple(int(math.floor(n * z)) for n, z in zip(raw.shape if kind != "tif-2d"
                                                                                else (1, *raw.shape[1:]), zoom))
    values = probs.read((0, 0, 0), probs.spatial_shape)
    assert np.isfinite(values).all() and 0 <= values.min() and values.max() <= 1

    labels = api.process("cfg.py", input=str(prediction), output="labels.zarr", show_progress=False)
    assert open_volume(labels / "cell").dtype == np.uint32
    result = api.evaluate("cfg.py", prediction=str(labels), truth=gt_path, figure="slice.png", show_progress=False)
    import matplotlib.image

    picture = matplotlib.image.imread(tmp_path / "slice.png")
    assert picture.shape[1] == 3 * picture.shape[0]  # raw (recorded by predict), truth, prediction
    assert result["kinds"] == {"cell": "instance"}
    s = result["scores"]
    assert {"f1/cell", "pq/cell", "voi_split/cell", "voi_merge/cell", "arand_error/cell"} <= set(s)
    assert all(math.isfinite(s[k]) for k in ("f1/cell", "voi/cell", "arand_error/cell", "iou/cell"))
    assert sum(r["n_truth"] for r in result["rows"]) == 4  # the truth was read whole, on its own grid

    # the validate crops of the datasplit, predicted and scored by name
    crops = api.predict("cfg.py", crops="split.csv", output="crops.zarr", show_progress=False)
    pooled = api.evaluate("cfg.py", prediction=str(crops), crops="split.csv", show_progress=False)
    assert pooled["classes"] == ["cell"] and len(pooled["crops"]) == 1
    assert pooled["scores"]["iou/cell"] == pytest.approx(result["scores"]["iou/cell"], abs=0.02)
