"""The built-in UNet and the model registry."""

from __future__ import annotations

import pytest
import torch

from bioloop.errors import ConfigError
from bioloop.models import MODELS, UNet, build_model, register_model


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
@pytest.mark.parametrize("norm", ["batch", "instance", "group", None])
def test_2d_output_matches_odd_input_size(norm, upsample):
    model = UNet(1, 3, dims=2, depth=4, base_channels=2, norm=norm, upsample=upsample)
    out = model(torch.randn(2, 1, 37, 45))
    assert out.shape == (2, 3, 37, 45)


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_3d_output_matches_odd_input_size(upsample):
    model = UNet(2, 4, dims=3, depth=3, base_channels=4, upsample=upsample)
    out = model(torch.randn(1, 2, 5, 20, 21))
    assert out.shape == (1, 4, 5, 20, 21)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 1, 1), (2, 1, 3, 2), (2, 1, 16, 16),
                                   (2, 1, 9, 64)])
def test_any_2d_size_including_smaller_than_the_pooling_factor(shape):
    model = UNet(1, 1, depth=4, base_channels=2)
    assert model(torch.randn(shape)).shape == shape


def test_3d_tiny_input_with_instance_norm():
    model = UNet(1, 2, dims=3, depth=3, base_channels=2, norm="instance")
    assert model(torch.randn(1, 1, 1, 2, 3)).shape == (1, 2, 1, 2, 3)


def test_padding_does_not_change_the_kept_region_when_size_is_a_multiple():
    """A size that is already a multiple of 2**(depth-1) goes through unpadded."""
    model = UNet(1, 1, depth=3, base_channels=2, norm=None).eval()
    x = torch.randn(1, 1, 8, 12)
    assert model._pad(x) is x
    assert model(x).shape == x.shape


def test_outputs_are_raw_logits_not_probabilities():
    model = UNet(1, 1, depth=2, base_channels=2, norm=None)
    with torch.no_grad():
        model.head.bias.fill_(-50.0)
        out = model(torch.randn(1, 1, 8, 8))
    assert (out < 0).all()


def test_gradients_reach_every_parameter_and_the_input():
    model = UNet(1, 2, dims=2, depth=3, base_channels=4, norm="group", dropout=0.1)
    x = torch.randn(2, 1, 19, 23, requires_grad=True)
    model(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_3d_gradients_flow():
    model = UNet(1, 1, dims=3, depth=2, base_channels=2)
    x = torch.randn(2, 1, 5, 6, 7, requires_grad=True)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert x.grad.abs().sum() > 0


# ------------------------------------------------------------------------- parameters


def test_parameter_counts_by_hand():
    # depth 1: conv 1->2 (18 + 2), conv 2->2 (36 + 2), head 2->1 (2 + 1) = 61
    assert _n_params(UNet(1, 1, depth=1, base_channels=2, norm=None)) == 61
    # depth 2 adds conv 2->4 (76), conv 4->4 (148), transpose 4->2 k2 (34),
    # conv 4->2 (74), conv 2->2 (38): 61 + 370 = 431
    assert _n_params(UNet(1, 1, depth=2, base_channels=2, norm=None)) == 431
    # bilinear swaps the transpose conv (34) for a 1x1 conv 4->2 (10)
    assert _n_params(UNet(1, 1, depth=2, base_channels=2, norm=None, upsample="bilinear")) == 407
    # 3D kernels are 3x3x3: 56 + 110 + 3
    assert _n_params(UNet(1, 1, dims=3, depth=1, base_channels=2, norm=None)) == 169


def test_parameter_count_grows_with_depth_and_width():
    counts = [_n_params(UNet(depth=d, base_channels=4)) for d in (1, 2, 3, 4)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert _n_params(UNet(base_channels=8, depth=2)) > _n_params(UNet(base_channels=4, depth=2))
    assert (_n_params(UNet(base_channels=4, depth=3, channel_multiplier=1))
            < _n_params(UNet(base_channels=4, depth=3)))


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("kwargs, message", [
    ({"in_channels": 0}, "in_channels must be an integer >= 1 (got 0)"),
    ({"out_channels": 2.0}, "out_channels must be an integer >= 1 (got 2.0)"),
    ({"dims": 4}, "dims must be 2 or 3 (got 4)"),
    ({"dims": 2.0}, "dims must be 2 or 3 (got 2.0)"),
    ({"depth": 0}, "depth must be an integer >= 1 (got 0)"),
    ({"base_channels": True}, "base_channels must be an integer >= 1 (got True)"),
    ({"channel_multiplier": 0.5}, "channel_multiplier must be a number >= 1 (got 0.5)"),
    ({"norm": "layer"}, "norm must be one of 'batch', 'instance', 'group' or None (got 'layer')"),
    ({"dropout": 1.0}, "dropout must be a number in [0, 1) (got 1.0)"),
    ({"upsample": "nearest"}, "upsample must be 'transpose' or 'bilinear' (got 'nearest')"),
])
def test_constructor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        UNet(**kwargs)
    assert str(info.value) == message


def test_forward_rejects_wrong_layout():
    model = UNet(2, 1, dims=3, depth=2, base_channels=2)
    with pytest.raises(ValueError, match=r"expects a \(B, C, D, H, W\) input with C=2 "
                                         r"\(got shape \(1, 2, 8, 8\)\)"):
        model(torch.randn(1, 2, 8, 8))


# ---------------------------------------------------------------------------- registry


def test_registry_builds_2d_and_3d_unets():
    m2 = build_model("2d_unet", {"base_channels": 2, "depth": 2}, where="cfg.py: model_kwargs")
    m3 = build_model("3d_unet", None, where="cfg.py: model_kwargs")
    assert isinstance(m2, UNet) and m2.dims == 2 and m2.depth == 2
    assert isinstance(m3, UNet) and m3.dims == 3 and m3.depth == 4
    assert set(MODELS) >= {"2d_unet", "3d_unet"}


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ConfigError) as info:
        build_model("unet2d", {}, where="cfg.py: model_kwargs")
    msg = str(info.value)
    assert msg.startswith("cfg.py: model_kwargs: unknown model_name (got 'unet2d'); choose one of '2d_unet', ")
    assert msg.endswith("(did you mean '2d_unet'?)")
    for name in ("3d_unet", "2d_resnet", "3d_resnet", "vitnet", "unet_xy", "unet_xy_zoom", "timm_unet"):
        assert f"'{name}'" in msg


def test_unknown_model_name_without_a_close_match():
    with pytest.raises(ConfigError) as info:
        build_model("transformer", {}, where="cfg.py: model_name")
    msg = str(info.value)
    assert msg.startswith("cfg.py: model_name: unknown model_name (got 'transformer'); choose one of '2d_unet'")
    assert "did you mean" not in msg


def test_unknown_model_kwargs_are_named_with_the_accepted_ones():
    with pytest.raises(ConfigError) as info:
        build_model("3d_unet", {"depht": 3, "dims": 2}, where="cfg.py: model_kwargs")
    msg = str(info.value)
    assert msg.startswith("cfg.py: model_kwargs: model '3d_unet' does not accept "
                          "'depht' (did you mean 'depth'?), 'dims' (got ")
    assert msg.endswith("accepted arguments are 'in_channels', 'out_channels', 'depth', "
                        "'base_channels', 'channel_multiplier', 'norm', 'dropout', 'upsample'")


def test_constructor_value_error_becomes_config_error():
    with pytest.raises(ConfigError) as info:
        build_model("2d_unet", {"norm": "layer"}, where="cfg.py: model_kwargs")
    assert str(info.value) == (
        "cfg.py: model_kwargs: model '2d_unet' rejected its arguments: norm must be one of "
        "'batch', 'instance', 'group' or None (got 'layer'); fix model_kwargs")


def test_model_kwargs_must_be_a_dict():
    with pytest.raises(ConfigError, match=r"cfg.py: model_kwargs: model_kwargs must be a dict "
                                          r"\(got \[1, 2\]\)"):
        build_model("2d_unet", [1, 2], where="cfg.py: model_kwargs")


def test_register_model_adds_an_architecture(monkeypatch):
    monkeypatch.setattr("bioloop.models.MODELS", dict(MODELS))

    def tiny(width: int = 3):
        return torch.nn.Conv2d(1, width, 1)

    register_model("tiny", tiny)
    assert build_model("tiny", {"width": 5}, where="w").out_channels == 5
    with pytest.raises(ConfigError, match="model 'tiny' does not accept 'depth'"):
        build_model("tiny", {"depth": 2}, where="w")
    with pytest.raises(ValueError, match="model 'tiny' is already registered"):
        register_model("tiny", tiny)
    register_model("tiny", lambda **kw: torch.nn.Identity(), overwrite=True)
    assert isinstance(build_model("tiny", {"anything": 1}, where="w"), torch.nn.Identity)
    with pytest.raises(TypeError, match="must be callable"):
        register_model("broken", 3)
