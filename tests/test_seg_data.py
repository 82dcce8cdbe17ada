"""The segmentation data layer: label layouts, target geometry, resampling, cost maps, samplers."""

import numpy as np
import pytest
import torch

from bioloop.config.loader import load_config
from bioloop.data.datasplit import CropEntry, write_datasplit
from bioloop.data.ngff import write_volume
from bioloop.tasks import get_task
from bioloop.tasks.segmentation.data import open_crops

BASE = """
datasplit_path = "split.csv"
input_array_info = {{"shape": {shape}, "scale": (8, 8, 8)}}
num_workers = 0
spatial_transforms = None
normalization = "none"
{extra}
"""


def _config(tmp_path, monkeypatch, extra="", shape=(1, 8, 8)):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.py").write_text(BASE.format(shape=shape, extra=extra))
    return load_config(tmp_path / "cfg.py")


def _label_image(tmp_path, name, labels, translation=(0.0, 0.0, 0.0), scale=(8.0, 8.0, 8.0)):
    path = str(tmp_path / "data.zarr" / name)
    write_volume(path, labels, scale=scale, translation=translation, labels=True, overwrite=True)
    return path


def _raw(tmp_path, shape=(4, 32, 32)):
    raw = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) % 251
    path = str(tmp_path / "data.zarr" / "raw")
    write_volume(path, raw, scale=(8.0, 8.0, 8.0), translation=(0.0, 0.0, 0.0), overwrite=True)
    return path, raw


def test_class_id_layout_gives_one_channel_per_id(tmp_path, monkeypatch):
    raw_path, raw = _raw(tmp_path)
    labels = np.zeros((4, 32, 32), np.uint16)
    labels[:, :16] = 7
    labels[:, 16:, :8] = 3
    gt = _label_image(tmp_path, "ids", labels)
    write_datasplit(tmp_path / "split.csv", [CropEntry("train", raw_path, gt, ("a", "b"))])
    cfg = _config(tmp_path, monkeypatch, 'classes = ["a", "b"]\nlabel_layout = "class_ids"\nclass_ids = {"a": 7, "b": 3}')
    (crop,) = open_crops(cfg, "train")
    got_raw, target, cost = crop.read((0, 0, 0), (4, 32, 32), (4, 32, 32), cfg.classes)
    assert cost is None
    np.testing.assert_array_equal(got_raw, raw)
    np.testing.assert_array_equal(target[0], (labels == 7).astype(np.float32))
    np.testing.assert_array_equal(target[1], (labels == 3).astype(np.float32))


def test_instance_layout_is_foreground_and_unlisted_classes_are_nan(tmp_path, monkeypatch):
    raw_path, _ = _raw(tmp_path)
    labels = np.zeros((4, 32, 32), np.uint32)
    labels[:, 2:6, 2:6] = 70000  # ids wider than uint16 survive
    labels[:, 20:30, 20:30] = 5
    gt = _label_image(tmp_path, "inst", labels)
    write_datasplit(tmp_path / "split.csv", [CropEntry("train", raw_path, gt, ("cell",))])
    cfg = _config(tmp_path, monkeypatch, 'classes = ["cell"]\nlabel_layout = "instances"')
    (crop,) = open_crops(cfg, "train")
    _, target, _ = crop.read((0, 0, 0), (4, 32, 32), (4, 32, 32), cfg.classes)
    np.testing.assert_array_equal(target[0], (labels > 0).astype(np.float32))
    # a box reaching past the crop is NaN (not annotated) outside it
    _, target, _ = crop.read((0, 28, 28), (1, 8, 8), (1, 8, 8), cfg.classes)
    assert np.isnan(target[0, 0, 4:, :]).all() and np.isnan(target[0, 0, :, 4:]).all()
    assert not np.isnan(target[0, 0, :4, :4]).any()


def test_labels_at_another_scale_are_resampled_onto_the_target_grid(tmp_path, monkeypatch):
    raw_path, _ = _raw(tmp_path)
    labels = np.zeros((2, 16, 16), np.uint8)  # 16 nm labels over the same world box as the raw
    labels[:, :8] = 1
    gt = tmp_path / "data.zarr" / "crop"
    write_volume(str(gt / "a"), labels, scale=(16.0, 16.0, 16.0), translation=(4.0, 4.0, 4.0), labels=True)
    write_datasplit(tmp_path / "split.csv", [CropEntry("train", raw_path, str(gt), ("a",))])
    cfg = _config(tmp_path, monkeypatch, 'classes = ["a"]')
    (crop,) = open_crops(cfg, "train")
    assert crop.shape == (4, 32, 32) and tuple(crop.grid.scale) == (8.0, 8.0, 8.0)
    _, target, _ = crop.read((0, 0, 0), (4, 32, 32), (4, 32, 32), cfg.classes)
    np.testing.assert_array_equal(target[0, :, :16], 1)
    np.testing.assert_array_equal(target[0, :, 16:], 0)


def test_smaller_target_is_centred_on_the_input_patch(tmp_path, monkeypatch):
    raw_path, raw = _raw(tmp_path, shape=(1, 32, 32))
    labels = np.zeros((1, 32, 32), np.uint8)
    gt = tmp_path / "data.zarr" / "crop"
    write_volume(str(gt / "a"), labels, scale=(8.0, 8.0, 8.0), translation=(0.0, 0.0, 0.0), labels=True)
    write_datasplit(tmp_path / "split.csv", [CropEntry("train", raw_path, str(gt), ("a",))])
    cfg = _config(tmp_path, monkeypatch, 'classes = ["a"]\ntarget_array_info = {"shape": (1, 4, 4), "scale": (8, 8, 8)}',
                  shape=(1, 12, 12))
    (crop,) = open_crops(cfg, "train")
    got_raw, target, _ = crop.read((0, 10, 10), (1, 4, 4), (1, 12, 12), cfg.classes)
    assert target.shape == (1, 1, 4, 4) and got_raw.shape == (1, 12, 12)
    # target voxels 10..13 sit in the middle of raw voxels 6..17
    np.testing.assert_array_equal(got_raw, raw[:, 6:18, 6:18])


def test_model_output_must_match_the_target_patch(tmp_path, monkeypatch):
    from bioloop.errors import ConfigError

    cfg = _config(tmp_path, monkeypatch, 'classes = ["a"]\ntarget_array_info = {"shape": (1, 4, 4), "scale": (8, 8, 8)}\n'
                  'model_kwargs = {"depth": 1, "base_channels": 2}', shape=(1, 12, 12))
    with pytest.raises(ConfigError, match=r"turns a \(12, 12\) input patch into \(12, 12\).*target patch is \(4, 4\)"):
        get_task("segmentation").build_model(cfg)


def test_allen_tifs_with_cost_maps_train_through_the_datasplit_section(tmp_path, monkeypatch):
    from bioloop.data.synthetic_allen import make_allen_dataset

    make_allen_dataset(tmp_path / "allen", n=2, shape=(8, 32, 32))
    extra = ('classes = ["structure"]\nlabel_layout = "binary"\ndatasplit = {"search_path": "allen", "layout": "allen"}\n'
             'validation_prob = 0.5\nnormalization = {"mode": "percentile", "low": 1, "high": 99}\n'
             'input_array_info = {"shape": (4, 16, 16), "scale": (290, 108, 108)}\n'
             'model_name = "3d_unet"\nmodel_kwargs = {"depth": 1, "base_channels": 2}')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.py").write_text(BASE.format(shape=(4, 16, 16), extra=extra).replace(
        'input_array_info = {"shape": (4, 16, 16), "scale": (8, 8, 8)}', ""))
    cfg = load_config(tmp_path / "cfg.py")
    task = get_task("segmentation")
    train, val = task.build_datasets(cfg)
    assert (tmp_path / "split.csv").exists() and val is not None
    sample = train[(0, 123)]
    assert sample["raw"].shape == (1, 4, 16, 16) and sample["cost"].shape == (1, 4, 16, 16)
    assert float(sample["cost"].max()) > 1.0  # border weights from the _CM file
    state = task.checkpoint_extras(cfg)["normalization"]
    assert state["mode"] == "percentile" and state["max"] > state["min"]  # fitted, recorded for predict
    loss = task.build_loss(cfg)
    batch = {k: v[None] for k, v in sample.items()}
    model = task.build_model(cfg)
    out = task.training_step(model, batch, loss, cfg)
    out["loss"].backward()


def test_patch_buffer_refreshes_every_epoch_shuffle_epochs(seg_config):
    cfg = load_config(seg_config(extra="patch_per_buffer = 4\nepoch_shuffle = 2\n"))
    train, _ = get_task("segmentation").build_datasets(cfg)
    assert len(train) == 4

    def raw_at(epoch):
        train.set_epoch(epoch)
        return train[(1, 999)]["raw"].clone()

    assert torch.equal(raw_at(0), raw_at(1))  # same round: the same cut patch (augmentation may differ)
    assert not torch.equal(raw_at(0), raw_at(2))


def test_weighted_sampler_draws_crops_with_rare_classes_more(seg_config):
    cfg = load_config(seg_config(extra="weighted_sampler = True\nspatial_transforms = None\n"))
    train, _ = get_task("segmentation").build_datasets(cfg)
    weights = train.source.chooser.probabilities
    crops = train.source.crops
    assert len(crops) == 4 and weights is not None
    # crop3 annotates only nuclei: mitochondria-bearing crops must carry more weight in total
    nuc_only = [i for i, c in enumerate(crops) if c.labels.get("mito") is None]
    assert len(nuc_only) == 1 and weights[nuc_only[0]] < max(weights)


def test_foreground_sampling_centres_patches_on_class_voxels(seg_config):
    extra = "spatial_transforms = None\n"
    uniform, _ = get_task("segmentation").build_datasets(load_config(seg_config(extra=extra)))
    cfg = load_config(seg_config(name="fg.py", extra=extra + "foreground_sampling = 1.0\n"))
    centred, _ = get_task("segmentation").build_datasets(cfg)
    keys = [(i % 4, 1000 + i) for i in range(64)]

    def counts(dataset):  # patches whose centre voxel is a nucleus or mitochondrion; patches holding any; mito
        targets = torch.nan_to_num(torch.stack([dataset[k]["target"] for k in keys])) > 0  # (N, C, 32, 32)
        return (int(targets[:, :, 16, 16].any(1).sum()), int(targets.flatten(1).any(1).sum()),
                int(targets[:, 1].flatten(1).any(1).sum()))

    centre, holding, mito = counts(centred)
    base_centre, _, base_mito = counts(uniform)
    assert holding == len(keys)  # every patch holds a class voxel (centred on one, or clamped at a crop border)
    assert centre > 0.75 * len(keys) > base_centre and mito > base_mito
    batch = centred.source.draw_many([k[1] for k in keys[:8]], [k[0] for k in keys[:8]])  # the batched path
    assert all(torch.allclose(s["target"], centred[k]["target"], equal_nan=True)  # same (index, seed) -> same patch
               for k, s in zip(keys, batch))
    with pytest.raises(Exception, match="foreground_sampling"):
        load_config(seg_config(name="bad.py", extra="foreground_sampling = 1.5\n"))
