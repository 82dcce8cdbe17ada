"""Blockwise prediction: every voxel written, exact values for checkable models, resume and sharding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bioloop.data.datasplit import CropEntry, write_datasplit
from bioloop.data.ngff import open_volume, write_volume
from bioloop.errors import DataError
from bioloop.tasks.segmentation import predict as P
from bioloop.tasks.segmentation.predict import predict_volume

SCALE = (2.0, 2.0, 2.0)
ORIGIN = (10.0, 20.0, 30.0)


def _cfg(patch=(4, 4, 4), classes=("a", "b")):
    info = SimpleNamespace(shape=patch, scale=SCALE)
    return SimpleNamespace(classes=list(classes), input_array_info=info, normalization="none",
                           spatial_dims=2 if patch[0] == 1 else 3, storage_options={},
                           validation_batch_size=None, batch_size=3)


def _extras(cfg, **more):
    return {"classes": cfg.classes, "input_shape": list(cfg.input_array_info.shape), "input_scale": list(SCALE),
            "normalization": "none", "spatial_dims": cfg.spatial_dims, **more}


class Linear(nn.Module):
    """Pointwise: channel 0 = 2x - 1, channel 1 = 0.5 - x (logits); counts forward calls."""

    def __init__(self, dims=3):
        super().__init__()
        self.dims, self.calls = dims, 0
        self.conv = (nn.Conv3d if dims == 3 else nn.Conv2d)(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, *(1,) * dims))
            self.conv.bias.copy_(torch.tensor([-1.0, 0.5]))

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def _linear_reference(raw):
    return np.stack([torch.sigmoid(torch.tensor(2 * raw - 1)).numpy(), torch.sigmoid(torch.tensor(0.5 - raw)).numpy()])


class Valid(nn.Module):
    """One 3x3x3 convolution without padding: output = input - 2 per axis."""

    dims = 3

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3)
        torch.manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn_like(self.conv.weight))

    def output_shape(self, shape):
        return tuple(n - 2 for n in shape)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def volume(tmp_path):
    def make(shape=(12, 12, 12), seed=0):
        data = np.random.default_rng(seed).random(shape, dtype=np.float32)
        path = tmp_path / "raw.zarr" / f"raw{seed}"
        write_volume(path, data, scale=SCALE, translation=ORIGIN, chunks=(5, 5, 5))
        return str(path), data
    return make


def _read(path):
    v = open_volume(path)
    return v, v.read((0, 0, 0), v.spatial_shape, fill=np.nan)


def _both(out, prefix=""):
    return np.stack([_read(out / prefix / name)[1] for name in ("a", "b")])


def test_every_voxel_of_a_volume_three_patches_wide_matches_the_reference(volume, tmp_path):
    path, raw = volume()
    cfg = _cfg()
    for block in (None, (5, 6, 7)):
        out = predict_volume(cfg, Linear(), extras=_extras(cfg), input=path, output=str(tmp_path / f"p{block}.zarr"),
                             block_shape=block, show_progress=False)
        got = _both(out)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, _linear_reference(raw), atol=1e-6)
        v, _ = _read(out / "a")
        assert v.translation == ORIGIN and v.scale == SCALE
        if block:  # each block is a whole number of chunks
            assert all(b % c == 0 for b, c in zip(block, v.array.chunks))


def test_results_do_not_depend_on_the_block_shape(volume, tmp_path):
    path, _ = volume((9, 10, 11))
    cfg = _cfg()
    conv = nn.Conv3d(1, 2, 3, padding=1)
    conv.dims = 3
    runs = [_both(predict_volume(cfg, conv, extras=_extras(cfg), input=path, output=str(tmp_path / f"{i}.zarr"),
                                 block_shape=block, batch_size=1, show_progress=False))
            for i, block in enumerate([(9, 10, 11), (2, 3, 4)])]
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)


def test_valid_convolution_model_crops_context_exactly(volume, tmp_path):
    path, raw = volume((10, 11, 12))
    cfg = _cfg(patch=(6, 6, 6))
    model = Valid()
    out = predict_volume(cfg, model, extras=_extras(cfg), input=path, output=str(tmp_path / "p.zarr"),
                         block_shape=(4, 5, 4), show_progress=False)
    padded = F.pad(torch.from_numpy(raw)[None, None], (1, 1) * 3)  # fill 0 beyond the volume
    expected = torch.sigmoid(model.conv(padded))[0].detach().numpy()
    np.testing.assert_allclose(_both(out), expected, atol=1e-5)


def test_roi_gets_its_translation_and_real_context(volume, tmp_path):
    path, raw = volume()
    cfg = _cfg()
    v = open_volume(path, SCALE)
    start, stop = v.voxel_to_world((1, 2, 3)), v.voxel_to_world((6, 12, 9))
    roi = ",".join(f"{a:g}:{b:g}" for a, b in zip(start, stop))
    out = predict_volume(cfg, Linear(), extras=_extras(cfg), input=path, output=str(tmp_path / "p.zarr"), roi=roi,
                         show_progress=False)
    a, values = _read(out / "a")
    assert a.translation == start and a.spatial_shape == (5, 10, 6)
    np.testing.assert_allclose(values, _linear_reference(raw)[0, 1:6, 2:12, 3:9], atol=1e-6)


def test_a_roi_partly_outside_is_clipped_with_a_line_saying_so(volume, tmp_path, capsys):
    path, raw = volume()  # 12^3 voxels of 2 nm, voxel centres from (10, 20, 30) nm
    cfg = _cfg()
    out = predict_volume(cfg, Linear(), extras=_extras(cfg), input=path, output=str(tmp_path / "p.zarr"),
                         roi="0:16,20:30,30:1000", show_progress=False)
    assert (f"{path}: --roi reaches outside the volume; clipped to 10:16,20:30,30:54 nm ((3, 5, 12) voxels)"
            in capsys.readouterr().err)
    a, values = _read(out / "a")
    assert a.translation == (10, 20, 30) and a.spatial_shape == (3, 5, 12)
    np.testing.assert_allclose(values, _linear_reference(raw)[0, :3, :5, :], atol=1e-6)
    # the printed box predicts the same region without a line
    predict_volume(cfg, Linear(), extras=_extras(cfg), input=path, output=str(tmp_path / "q.zarr"),
                   roi="10:16,20:30,30:54", show_progress=False)
    assert "clipped" not in capsys.readouterr().err and _read(tmp_path / "q.zarr" / "a")[0].spatial_shape == (3, 5, 12)


def test_checkpoint_settings_that_override_the_config_are_announced(volume, tmp_path, capsys):
    path, _ = volume((4, 4, 4))
    cfg = _cfg()
    extras = {**_extras(cfg), "classes": ["x", "y"], "input_scale": [4.0, 4.0, 4.0], "checkpoint": "run/best.pth"}
    predict_volume(cfg, Linear(), extras=extras, input=path, output=str(tmp_path / "p.zarr"), show_progress=False)
    err = capsys.readouterr().err
    assert ("predict: run/best.pth was trained with classes ['x', 'y'], the config says ['a', 'b']; "
            "predicting with the checkpoint's") in err
    assert "run/best.pth was trained with voxel size (nm) (4.0, 4.0, 4.0), the config says (2.0, 2.0, 2.0)" in err
    assert "voxel size (2, 2, 2) nm resampled to (4, 4, 4) nm" in err  # the input follows the checkpoint
    assert open_volume(tmp_path / "p.zarr" / "x").scale == (4.0, 4.0, 4.0)
    # an error the checkpoint's voxel size causes names the checkpoint
    bad = {**extras, "input_scale": [4.0, 4.0]}
    with pytest.raises(DataError, match=r"voxel size needs 3 positive values.*from run/best.pth\)"):
        predict_volume(cfg, Linear(), extras=bad, input=path, output=str(tmp_path / "q.zarr"), show_progress=False)


def test_crops_mode_predicts_each_validate_crop_box(volume, tmp_path):
    path, raw = volume()
    crops = tmp_path / "raw.zarr" / "crops"
    write_volume(crops / "crop1" / "a", np.ones((3, 4, 5), np.uint8), scale=SCALE,
                 translation=tuple(o + s * k for o, s, k in zip(ORIGIN, SCALE, (2, 3, 4))))
    write_volume(crops / "crop2" / "b", np.ones((2, 2, 2), np.uint8), scale=SCALE, translation=ORIGIN)
    split = tmp_path / "split.csv"
    write_datasplit(split, [CropEntry("validate", path, str(crops / "crop1"), ("a",)),
                            CropEntry("train", path, str(crops / "crop2"), ("b",)),
                            CropEntry("validate", path, str(crops / "crop2"), ("b",))])
    cfg = _cfg()
    out = predict_volume(cfg, Linear(), extras=_extras(cfg), crops=str(split), output=str(tmp_path / "p.zarr"),
                         show_progress=False)
    one, values = _read(out / "crop1" / "b")
    assert one.spatial_shape == (3, 4, 5) and one.translation == (14.0, 26.0, 38.0)
    np.testing.assert_allclose(values, _linear_reference(raw)[1, 2:5, 3:7, 4:9], atol=1e-6)
    assert _read(out / "crop2" / "a")[0].spatial_shape == (2, 2, 2)


class Blur(nn.Module):
    """A flip-symmetric 3x3x3 kernel with zero padding: flipping the input flips the output."""

    dims = 3

    def __init__(self):
        super().__init__()
        self.calls = 0
        grid = torch.stack(torch.meshgrid(*[torch.arange(3.0) - 1] * 3, indexing="ij")).abs().sum(0)
        self.register_buffer("kernel", (1.0 / (1 + grid))[None, None])

    def forward(self, x):
        self.calls += 1
        return F.conv3d(x, self.kernel, padding=1).repeat(1, 2, 1, 1, 1)


def test_tta_equals_plain_prediction_for_a_flip_equivariant_model(volume, tmp_path):
    path, _ = volume((6, 7, 8))
    cfg = _cfg()
    plain, flipped = Blur(), Blur()
    a = predict_volume(cfg, plain, extras=_extras(cfg), input=path, output=str(tmp_path / "a.zarr"),
                       show_progress=False)
    b = predict_volume(cfg, flipped, extras=_extras(cfg), input=path, output=str(tmp_path / "b.zarr"), tta=True,
                       show_progress=False)
    np.testing.assert_allclose(_both(a), _both(b), atol=1e-6)
    assert flipped.calls == 8 * plain.calls  # every combination of z, y and x flips


class ShiftX(nn.Module):
    """logit[x] = input[x + 1] (0 past the patch end); flipping x makes it input[x - 1]."""

    dims = 3

    def forward(self, x):
        return F.pad(x[..., 1:], (0, 1)).repeat(1, 2, 1, 1, 1)


def test_tta_averages_the_unflipped_probabilities(volume, tmp_path):
    path, raw = volume((4, 4, 4))
    cfg = _cfg()
    out = predict_volume(cfg, ShiftX(), extras=_extras(cfg), input=path, output=str(tmp_path / "p.zarr"), tta=True,
                         show_progress=False)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    right = np.pad(raw[..., 1:], ((0, 0), (0, 0), (0, 1)))
    left = np.pad(raw[..., :-1], ((0, 0), (0, 0), (1, 0)))
    np.testing.assert_allclose(_read(out / "a")[1], (sig(right) + sig(left)) / 2, atol=1e-6)


class ShiftH(nn.Module):
    """A 2D model: logit[h, w] = input[h + 1, w] (0 past the patch end)."""

    dims = 2

    def forward(self, x):
        return F.pad(x[..., 1:, :], (0, 0, 0, 1)).repeat(1, 2, 1, 1)


def test_orthoplanes_average_the_three_views_of_a_2d_model(volume, tmp_path):
    path, raw = volume((5, 5, 5))
    cfg = _cfg(patch=(1, 5, 5))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    plain = predict_volume(cfg, ShiftH(), extras=_extras(cfg), input=path, output=str(tmp_path / "a.zarr"),
                           show_progress=False)
    along_y = np.pad(raw[:, 1:], ((0, 0), (0, 1), (0, 0)))  # the (y, x) view: H is y
    np.testing.assert_allclose(_read(plain / "a")[1], sig(along_y), atol=1e-6)
    ortho = predict_volume(cfg, ShiftH(), extras=_extras(cfg), input=path, output=str(tmp_path / "b.zarr"),
                           orthoplanes=True, show_progress=False)
    along_z = np.pad(raw[1:], ((0, 1), (0, 0), (0, 0)))  # the (z, x) and (z, y) views: H is z
    np.testing.assert_allclose(_read(ortho / "a")[1], (sig(along_y) + 2 * sig(along_z)) / 3, atol=1e-6)


def test_interrupted_prediction_resumes_without_recomputing_finished_blocks(volume, tmp_path, monkeypatch):
    path, _ = volume()
    cfg = _cfg()
    options = dict(extras=_extras(cfg), input=path, block_shape=(4, 4, 4), overlap=0.0, batch_size=1,
                   show_progress=False)
    reference = _both(predict_volume(cfg, Linear(), output=str(tmp_path / "ref.zarr"), **options))
    write, written = P._write_block, []

    def crash_on_third(block, probs, classes):
        if len(written) == 2:
            raise RuntimeError("simulated crash")
        write(block, probs, classes)
        written.append(block.index)

    monkeypatch.setattr(P, "_write_block", crash_on_third)
    out = str(tmp_path / "p.zarr")
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_volume(cfg, Linear(), output=out, **options)
    monkeypatch.setattr(P, "_write_block", write)
    with pytest.raises(DataError, match=r"p.zarr: holds an unfinished prediction made with other settings.*'tta'"):
        predict_volume(cfg, Linear(), output=out, tta=True, **options)
    with pytest.raises(DataError, match="output already exists"):
        predict_volume(cfg, Linear(), output=out, resume=False, **options)
    model = Linear()
    predict_volume(cfg, model, output=out, **options)
    assert model.calls == 27 - 2  # one tile per block, the two written blocks skipped
    np.testing.assert_array_equal(_both(tmp_path / "p.zarr"), reference)
    with pytest.raises(DataError, match=r"p.zarr: output already exists; choose another --output or pass --overwrite"):
        predict_volume(cfg, Linear(), output=out, **options)
    predict_volume(cfg, Linear(), output=out, overwrite=True, tta=True, **options)


def test_ranks_share_the_blocks_and_their_union_is_the_single_process_result(volume, tmp_path):
    path, _ = volume((9, 10, 11))
    cfg = _cfg()
    conv = nn.Conv3d(1, 2, 3, padding=1)
    options = dict(extras=_extras(cfg), input=path, block_shape=(3, 4, 5), show_progress=False)
    single = _both(predict_volume(cfg, conv, output=str(tmp_path / "one.zarr"), **options))
    out = str(tmp_path / "two.zarr")
    predict_volume(cfg, conv, output=out, rank=0, world_size=2, **options)
    markers = tmp_path / "two.zarr" / ".bioloop_blocks"
    assert sorted(int(m.stem) for m in markers.glob("*.done")) == list(range(0, 27, 2))  # rank 0: even blocks
    predict_volume(cfg, conv, output=out, rank=1, world_size=2, **options)
    np.testing.assert_array_equal(_both(tmp_path / "two.zarr"), single)
    assert not markers.exists()  # complete: the resume markers are gone
    with pytest.raises(DataError, match="output already exists"):
        predict_volume(cfg, conv, output=out, **options)


@pytest.mark.parametrize("kwargs, message", [
    ({"overlap": 1.0}, r"--overlap: expected a fraction in \[0, 1\)"),
    ({"block_shape": (4, 0, 4)}, r"--block-shape: expected three positive voxel counts"),
    ({"crops": "split.csv"}, r"--input/--crops: give exactly one of them"),
    ({"orthoplanes": True}, r"--orthoplanes: needs a 2D model"),
])
def test_bad_options_are_refused(volume, tmp_path, kwargs, message):
    path, _ = volume((4, 4, 4))
    cfg = _cfg()
    with pytest.raises(DataError, match=message):
        predict_volume(cfg, Linear(), extras=_extras(cfg), input=path, output=str(tmp_path / "p.zarr"), **kwargs)


def test_a_model_that_crops_without_output_shape_is_reported(volume, tmp_path):
    path, _ = volume((4, 4, 4))
    cfg = _cfg()
    conv = nn.Conv3d(1, 2, 3)
    with pytest.raises(DataError, match=r"model: returned probabilities of shape \(1, 2, 2, 2, 2\).*"
                                        r"\(model, patch \(4, 4, 4\) and classes from run/last.pth\)"):
        predict_volume(cfg, conv, extras=_extras(cfg, checkpoint="run/last.pth"), input=path,
                       output=str(tmp_path / "p.zarr"), show_progress=False)


def test_crops_without_validate_rows_or_class_arrays(volume, tmp_path):
    path, _ = volume((4, 4, 4))
    cfg = _cfg()
    split = tmp_path / "split.csv"
    write_datasplit(split, [CropEntry("train", path, str(tmp_path / "nowhere"), ("a",))])
    with pytest.raises(DataError, match=r"split.csv: the datasplit has no 'validate' rows"):
        predict_volume(cfg, Linear(), extras=_extras(cfg), crops=str(split), output=str(tmp_path / "p.zarr"))
    write_datasplit(split, [CropEntry("validate", path, str(tmp_path / "nowhere"), ("a",))])
    with pytest.raises(DataError, match=r"nowhere: no class array found in the crop group"):
        predict_volume(cfg, Linear(), extras=_extras(cfg), crops=str(split), output=str(tmp_path / "p.zarr"))
    crop = tmp_path / "c.zarr" / "crop1"
    write_volume(crop / "a", np.ones((2, 2, 2), np.uint8), scale=SCALE, translation=ORIGIN)
    write_datasplit(split, [CropEntry("validate", path, str(crop), ("a",))] * 2)
    with pytest.raises(DataError, match=r"split.csv: two validate crops share a name.*\['crop1'\]"):
        predict_volume(cfg, Linear(), extras=_extras(cfg), crops=str(split), output=str(tmp_path / "p.zarr"))


def test_softmax_activation_sums_to_one(volume, tmp_path):
    path, _ = volume((4, 5, 6))
    cfg = _cfg()
    out = predict_volume(cfg, Linear(), extras=_extras(cfg, activation="softmax"), input=path,
                         output=str(tmp_path / "p.zarr"), show_progress=False)
    np.testing.assert_allclose(_both(out).sum(0), 1.0, atol=1e-6)


class TileMean(nn.Module):
    """Every voxel's logit is the mean of its tile: shows how neighbouring tiles blend."""

    dims = 3

    def forward(self, x):
        return x.mean(dim=(2, 3, 4), keepdim=True).expand(-1, 2, *x.shape[2:])


def test_overlapping_tiles_blend_with_centre_weighted_windows(tmp_path):
    # window for 4 voxels: 1 - 0.9 |2 (i + 0.5) / 4 - 1| = 0.325, 0.775, 0.775, 0.325
    np.testing.assert_allclose(P._window((1, 1, 4))[0, 0], [0.325, 0.775, 0.775, 0.325], atol=1e-6)
    raw = np.array([0, 0, 0, 0, 4, 4], np.float32).reshape(1, 1, 6)
    path = tmp_path / "raw.zarr" / "ramp"
    write_volume(path, raw, scale=SCALE)
    cfg = _cfg(patch=(1, 1, 4))
    cfg.spatial_dims = 3
    out = predict_volume(cfg, TileMean(), extras=_extras(cfg, spatial_dims=3), input=str(path),
                         output=str(tmp_path / "p.zarr"), overlap=0.5, show_progress=False)
    # tiles start at x = 0 (mean 0 -> p 0.5) and x = 2 (mean 2 -> p 0.8808); x = 2 weighs them 0.775 : 0.325
    p0, p1 = 0.5, 1 / (1 + np.exp(-2.0))
    expected = [p0, p0, (0.775 * p0 + 0.325 * p1) / 1.1, (0.325 * p0 + 0.775 * p1) / 1.1, p1, p1]
    np.testing.assert_allclose(_read(out / "a")[1][0, 0], expected, atol=1e-6)
    np.testing.assert_allclose(expected[2:4], [0.61251, 0.76829], atol=1e-5)  # by hand


def test_output_zarr_format_2_writes_ome_ngff_0_4_with_the_same_values(volume, tmp_path):
    from ome_zarr.io import parse_url

    path, _ = volume((4, 6, 6))
    cfg = _cfg()
    v3 = predict_volume(cfg, Linear(), extras=_extras(cfg), input=path, output=str(tmp_path / "v3.zarr"),
                        show_progress=False)
    cfg.output_zarr_format = 2
    v2 = predict_volume(cfg, Linear(), extras=_extras(cfg), input=path, output=str(tmp_path / "v2.zarr"),
                        show_progress=False)
    assert (v2 / "a" / ".zattrs").is_file() and not (v2 / "a" / "zarr.json").exists()
    assert parse_url(str(v2 / "a")).version == "0.4" and parse_url(str(v3 / "a")).version == "0.5"
    np.testing.assert_array_equal(_both(v2), _both(v3))
    assert open_volume(v2 / "a").translation == open_volume(v3 / "a").translation == ORIGIN


@pytest.mark.parametrize("dtype,compressor,atol", [("float16", "lz4", 2.5e-4), ("uint8", "zstd", 0.5 / 255 + 1e-7),
                                                    ("uint8", "none", 0.5 / 255 + 1e-7)])
def test_output_dtype_round_trips_through_predict_process_and_evaluate(volume, tmp_path, dtype, compressor, atol):
    from bioloop.tasks.segmentation.evaluate import evaluate
    from bioloop.tasks.segmentation.probabilities import decoded
    from bioloop.tasks.segmentation.process import ProcessConfig, process_volume

    path, raw = volume((6, 8, 8))
    cfg = _cfg()
    cfg.output_dtype, cfg.output_compressor = dtype, compressor
    out = predict_volume(cfg, Linear(), extras=_extras(cfg), input=path, output=str(tmp_path / "p.zarr"),
                         show_progress=False)
    reference = _linear_reference(raw)
    stored = open_volume(out / "a")
    assert stored.dtype == np.dtype(dtype)
    codecs = str(stored.array.compressors)
    assert ("lz4" in codecs) if compressor == "lz4" else ("Zstd" in codecs) if compressor == "zstd" else codecs == "()"
    if dtype == "uint8":  # stored as round(p * 255), exactly
        np.testing.assert_array_equal(stored.read((0, 0, 0), stored.spatial_shape),
                                      np.rint(reference[0] * 255).astype(np.uint8))
    probs = np.stack([decoded(open_volume(out / n), str(out / n)).read((0, 0, 0), (6, 8, 8)) for n in ("a", "b")])
    assert probs.dtype == np.float32 and probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_allclose(probs, reference, atol=atol)
    # process thresholds the rescaled probabilities, not the stored codes
    masks = process_volume(ProcessConfig(thresholds=0.5), ["a", "b"], input=str(out), output=str(tmp_path / "m.zarr"),
                           show_progress=False)
    for c, name in enumerate(("a", "b")):
        np.testing.assert_array_equal(_read(masks / name)[1], (probs[c] > 0.5).astype(np.float32))
    # evaluate scores a uint8/float16 prediction as probabilities (semantic), never as label ids
    truth = (reference > 0.5).astype(np.uint8)
    for c, name in enumerate(("a", "b")):
        write_volume(tmp_path / "gt.zarr" / "crop" / name, truth[c], scale=SCALE, translation=ORIGIN)
    result = evaluate(SimpleNamespace(classes=["a", "b"], threshold=0.5, storage_options={}), prediction=str(out),
                      truth=str(tmp_path / "gt.zarr" / "crop"), show_progress=False)
    for c, name in enumerate(("a", "b")):
        mask, gt = probs[c] > 0.5, truth[c] > 0
        assert result["kinds"][name] == "semantic"
        assert result["scores"][f"iou/{name}"] == pytest.approx((mask & gt).sum() / (mask | gt).sum())
