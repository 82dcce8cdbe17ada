"""The segmentation model zoo: resnet, vitnet, Allen unet_xy(_zoom) and timm_unet."""

from __future__ import annotations

import pytest
import torch

from bioloop.errors import CheckpointError, ConfigError
from bioloop.models import (MODELS, TimmUNet, UNet, UNetXY, UNetXYZoom, build_model, check_sizes,
                            valid_sizes)

WHERE = "train.py: model_kwargs"
SMALL = "test_resnet"  # timm's tiny test model (strides 2..32), fast on CPU
_VIT = dict(embed_dim=8, depth=1, num_heads=2, mlp_dim=16, head_channels=8, dropout=0.0)

# name -> (tiny kwargs, input shape (B, C, *S)); every registered model must be listed here
TINY = {
    "2d_unet": (dict(base_channels=4, depth=2), (2, 1, 12, 10)),
    "3d_unet": (dict(base_channels=4, depth=2), (2, 1, 6, 8, 10)),
    "2d_resnet": (dict(base_channels=4, n_blocks=2), (2, 1, 30, 22)),
    "3d_resnet": (dict(base_channels=4, n_blocks=1, in_channels=2, out_channels=3),
                  (1, 2, 7, 12, 10)),
    "vitnet": (dict(_VIT, patch_size=2, encoder_channels=(4, 4, 4), img_size=16),
               (2, 1, 16, 16, 32)),
    "unet_xy": (dict(base_channels=4), (1, 1, 29, 92, 92)),
    "unet_xy_zoom": (dict(base_channels=4, zoom_ratio=2), (1, 1, 33, 184, 184)),
    "timm_unet": (dict(encoder="test_resnet", decoder_channels=(16, 8, 8, 4, 4),
                       out_channels=2), (2, 1, 50, 37)),
}


def test_every_registered_model_has_a_tiny_case():
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    kwargs, shape = TINY[name]
    model = build_model(name, kwargs, where=WHERE)
    assert model.dims == len(shape) - 2
    x = torch.randn(*shape)
    spatial = tuple(shape[2:])
    expected = model.output_shape(spatial) if hasattr(model, "output_shape") else spatial
    out = model.train()(x)
    outs = out if isinstance(out, list) else [out]
    assert len(outs) == (3 if hasattr(model, "output_shape") else 1)
    channels = kwargs.get("out_channels", 2 if name.startswith("unet_xy") else 1)
    for o in outs:
        assert tuple(o.shape) == (shape[0], channels, *expected)
    sum(o.square().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        assert isinstance(model.eval()(x), torch.Tensor)


def test_unet_xy_hand_checked_sizes():
    # 92 -4 =88 /2 =44 -4 =40 /2 =20 -4 =16 /2 =8 -4 =4 | x2 =8 -4 =4 (three times); z: -28
    assert UNetXY().output_shape((29, 92, 92)) == (1, 4, 4)
    assert UNetXY().output_shape((30, 100, 108)) == (2, 12, 20)
    # zoom 2: 184 /2 = 92 -> 4 as above, then x2 = 8, -4 = 4; z: -32
    assert UNetXYZoom(zoom_ratio=2).output_shape((33, 184, 184)) == (1, 4, 4)


def test_allen_reference_sizes():
    assert UNetXY().output_shape([48, 148, 148]) == (20, 60, 60)
    assert UNetXYZoom(zoom_ratio=3).output_shape([52, 420, 420]) == (20, 152, 152)
    check_sizes(UNetXY(base_channels=1), (48, 148, 148), (20, 60, 60))
    check_sizes(UNetXYZoom(base_channels=1, zoom_ratio=3), (52, 420, 420), (20, 152, 152))


def test_unet_xy_output_shape_matches_forward_on_an_anisotropic_size():
    model = UNetXY(base_channels=2).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 30, 100, 108))
    assert tuple(out.shape[2:]) == model.output_shape((30, 100, 108)) == (2, 12, 20)


def test_unet_xy_keeps_allen_module_names():
    keys = set(UNetXYZoom(base_channels=1).state_dict())
    assert {"ec1.0.weight", "ec4.3.bias", "up3.weight", "dc3.0.weight", "up0.weight",
            "predict0.weight", "up1a.weight", "conv2a.weight", "predict2a.bias"} <= keys
    assert "ec1.1.running_mean" in keys and "ec1.1.weight" not in keys  # BatchNorm affine=False


def test_invalid_size_in_suggests_the_nearest_valid_sizes():
    with pytest.raises(ConfigError) as info:
        build_model("unet_xy", {"size_in": (48, 150, 150)}, where=WHERE)
    text = str(info.value)
    assert text.startswith(WHERE)
    assert "size_in (48, 150, 150) is not valid for unet_xy" in text
    assert "(48, 148, 148) giving size_out (20, 60, 60)" in text
    assert "(48, 156, 156) giving size_out (20, 68, 68)" in text
    with pytest.raises(ValueError, match=r"zoom_ratio=3\): nearest valid sizes are "
                                         r"\(52, 420, 420\)"):
        UNetXYZoom(size_in=(52, 421, 420), base_channels=1)


def test_forward_on_an_invalid_size_names_valid_sizes():
    with pytest.raises(ValueError, match=r"nearest valid sizes are \(29, 92, 92\) giving "
                                         r"size_out \(1, 4, 4\)"):
        UNetXY(base_channels=1)(torch.zeros(1, 1, 20, 92, 92))


def test_check_sizes_mismatch_names_the_right_size_out_and_size_in():
    with pytest.raises(ValueError) as info:
        check_sizes(UNetXY(base_channels=1), (48, 156, 156), (20, 60, 60))
    text = str(info.value)
    assert "gives size_out (20, 68, 68)" in text
    assert "size_in = (48, 148, 148) for size_out (20, 60, 60)" in text
    with pytest.raises(ConfigError, match=r"gives size_out \(20, 68, 68\)"):
        build_model("unet_xy", {"size_in": [48, 156, 156], "size_out": [20, 60, 60],
                                "base_channels": 1}, where=WHERE)
    build_model("unet_xy", {"size_in": [48, 148, 148], "size_out": [20, 60, 60],
                            "base_channels": 1}, where=WHERE)
    with pytest.raises(ValueError, match="whose output has its input's size"):
        check_sizes(UNet(), (64, 64), (60, 60))


def test_valid_sizes():
    assert valid_sizes("unet_xy", (48, 150, 150)) == [(48, 148, 148), (48, 156, 156),
                                                      (48, 140, 140)]
    assert valid_sizes(UNetXY(base_channels=1), (48, 148, 148), n=2) == [(48, 148, 148),
                                                                          (48, 140, 140)]
    assert valid_sizes("unet_xy_zoom", (52, 410, 410), n=2, zoom_ratio=3) == [
        (52, 420, 420), (52, 396, 396)]  # closest first
    assert valid_sizes(UNet(depth=3), (30, 30), n=2) == [(28, 28), (32, 32)]
    with pytest.raises(ValueError, match="unknown model"):
        valid_sizes("3d_unet", (8, 8, 8))


def test_vitnet_size_errors():
    model = build_model("vitnet", dict(_VIT, encoder_channels=(2, 2, 2), img_size=32),
                        where=WHERE)
    assert model.size_multiple == 32
    with pytest.raises(ValueError, match=r"must be a multiple of 32 .*patch_size 8\); use e\.g\. "
                                         r"\(32, 32, 32\) or \(64, 64, 64\)"):
        model(torch.zeros(1, 1, 40, 40, 40))
    with pytest.raises(ConfigError, match="decoder_channels needs 3 entries"):
        build_model("vitnet", dict(patch_size=2, decoder_channels=(8, 8)), where=WHERE)
    with pytest.raises(ConfigError, match="img_size must be 3 positive multiples of 32"):
        build_model("vitnet", dict(img_size=48), where=WHERE)


def test_vitnet_2d_with_other_grid_than_img_size():
    model = build_model("vitnet", dict(_VIT, dims=2, patch_size=4, encoder_channels=(4, 8),
                                       img_size=16), where=WHERE)
    assert model.dims == 2
    assert model(torch.zeros(2, 1, 24, 40)).shape == (2, 1, 24, 40)


def test_timm_unet_refuses_to_download():
    with pytest.raises(ConfigError, match=r"never uses the network.*"
                                          r"pretrained='path/to/weights.pth'"):
        build_model("timm_unet", {"pretrained": True}, where=WHERE)
    default = TimmUNet()  # resnet18, built offline
    assert default.size_multiple == 32 and default.dims == 2


def test_timm_unet_loads_a_local_state_dict(tmp_path):
    torch.manual_seed(1)
    source = TimmUNet(in_channels=2, encoder=SMALL)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    loaded = build_model("timm_unet", {"in_channels": 2, "encoder": SMALL,
                                       "pretrained": str(path)}, where=WHERE)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value)


def test_timm_unet_adapts_an_rgb_stem_to_grey(tmp_path):
    import timm

    rgb = timm.create_model(SMALL, pretrained=False)
    path = tmp_path / "classifier.pth"
    torch.save({"state_dict": rgb.state_dict()}, path)  # a classifier checkpoint: head ignored
    grey = TimmUNet(in_channels=1, encoder=SMALL, pretrained=path)
    assert torch.allclose(grey.encoder.state_dict()["conv1.0.weight"],
                          rgb.state_dict()["conv1.0.weight"].sum(1, keepdim=True))


def test_timm_unet_weight_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth: pretrained weights file not found"):
        TimmUNet(encoder=SMALL, pretrained=tmp_path / "nope.pth")
    bad = tmp_path / "other.pth"
    torch.save({"something": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match=r"other\.pth: no encoder weights found"):
        TimmUNet(encoder=SMALL, pretrained=bad)
    partial = tmp_path / "partial.pth"
    state = TimmUNet(encoder=SMALL).encoder.state_dict()
    state.pop("conv1.1.bias")
    torch.save(state, partial)
    with pytest.raises(CheckpointError,
                       match=r"partial\.pth: .*missing 1 tensors .*conv1\.1\.bias"):
        TimmUNet(encoder=SMALL, pretrained=partial)


def test_timm_unet_unknown_encoder_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown timm encoder 'resnet81' \(did you mean "
                                          r"'resnet18'\?\)"):
        build_model("timm_unet", {"encoder": "resnet81"}, where=WHERE)


def test_unknown_model_and_kwarg_did_you_mean():
    with pytest.raises(ConfigError, match=r"did you mean '3d_resnet'\?"):
        build_model("3d_resnett", {}, where=WHERE)
    with pytest.raises(ConfigError, match=r"'zoom_ratoi' \(did you mean 'zoom_ratio'\?\)"):
        build_model("unet_xy_zoom", {"zoom_ratoi": 2}, where=WHERE)
    with pytest.raises(ConfigError, match="padding must be 'reflect', 'replicate' or 'zeros'"):
        build_model("2d_resnet", {"padding": "valid"}, where=WHERE)


@pytest.mark.parametrize("name, kwargs, message", [
    ("unet_xy", {"size_in": "abc"}, "size_in must be three integers (z, y, x)"),
    ("unet_xy", {"size_out": (20, 60, 60)}, "size_out needs size_in"),
    ("unet_xy", {"norm": "group"}, "norm must be 'batch', 'instance' or None"),
    ("unet_xy_zoom", {"zoom_ratio": 0}, "zoom_ratio must be an integer >= 1"),
    ("vitnet", {"embed_dim": 10, "num_heads": 3}, "embed_dim must be divisible by num_heads"),
    ("vitnet", {"patch_size": 3}, "patch_size must be a power of 2"),
    ("vitnet", {"dims": 4}, "dims must be 2 or 3"),
    ("vitnet", {"encoder_channels": []}, "encoder_channels must be a list of at least 1"),
    ("vitnet", {"dropout": 1.0}, "dropout must be a number in [0, 1)"),
    ("vitnet", {"norm": "layer"}, "norm must be one of"),
    ("vitnet", {"patch_size": 1, "encoder_channels": [4]}, "at least one upsampling step"),
    ("2d_resnet", {"n_blocks": -1}, "n_blocks must be an integer >= 0"),
    ("3d_resnet", {"norm": "layer"}, "norm must be one of"),
    ("3d_resnet", {"dropout": 2}, "dropout must be a number in [0, 1)"),
    ("timm_unet", {"pretrained": 5}, "pretrained must be False or the path of a weights file"),
    ("timm_unet", {"encoder": SMALL, "decoder_channels": [8, 8]},
     "decoder_channels must be 5 positive integers, one per feature map"),
    ("timm_unet", {"encoder": SMALL, "norm": "layer"}, "norm must be one of"),
])
def test_constructor_argument_errors(name, kwargs, message):
    with pytest.raises(ConfigError) as info:
        build_model(name, kwargs, where=WHERE)
    assert str(info.value).startswith(f"{WHERE}: model '{name}' rejected its arguments")
    assert message in str(info.value)


@pytest.mark.parametrize("name, kwargs, shape", [
    ("2d_resnet", dict(base_channels=1, n_blocks=0), (1, 1, 8, 8, 8)),
    ("vitnet", dict(_VIT, encoder_channels=(2, 2, 2)), (1, 2, 32, 32, 32)),
    ("unet_xy", dict(base_channels=1), (1, 1, 92, 92)),
    ("timm_unet", dict(encoder=SMALL), (1, 3, 32, 32)),
])
def test_forward_names_the_expected_layout(name, kwargs, shape):
    model = build_model(name, kwargs, where=WHERE)
    with pytest.raises(ValueError, match=r"expects a \(B, C, .*H, W\) input with C=1 "
                                         r"\(got shape"):
        model(torch.zeros(shape))


def test_timm_unet_unreadable_or_foreign_weight_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth: cannot read pretrained weights"):
        TimmUNet(encoder=SMALL, pretrained=junk)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match=r"list\.pth: pretrained weights file holds no "
                                              r"state dict"):
        TimmUNet(encoder=SMALL, pretrained=listed)
    extra = tmp_path / "extra.pth"
    state = TimmUNet(encoder=SMALL).encoder.state_dict()
    state["layer9.0.conv.weight"] = torch.zeros(1)
    torch.save(state, extra)
    with pytest.raises(CheckpointError, match=r"extra\.pth: the file has 1 tensors the encoder "
                                              r"lacks \(e\.g\. layer9\.0\.conv\.weight\)"):
        TimmUNet(encoder=SMALL, pretrained=extra)
