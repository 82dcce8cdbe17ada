"""The shared backbone factory (bioloop.models.backbones) used by pose, tracking and timm_unet."""

import pytest
import torch
import torchvision

from bioloop.errors import CheckpointError, ConfigError
from bioloop.models.backbones import build_backbone, check_pretrained
from bioloop.tasks.pose.backbones import build_backbone as build_pose_backbone
from bioloop.tasks.tracking.model import VisualEncoder


def test_timm_features_report_the_widths_and_strides_they_output():
    built = build_backbone("test_resnet", output="features", in_channels=2)
    maps = built.module(torch.zeros(1, 2, 64, 96))
    assert built.widths == tuple(m.shape[1] for m in maps)
    assert built.strides == (2, 4, 8, 16, 32)  # test_resnet's five stages
    assert [m.shape[2:] for m in maps] == [(64 // s, 96 // s) for s in built.strides]
    deepest = build_backbone("test_resnet", out_indices=(-1,), output_stride=16)
    (only,) = deepest.module(torch.zeros(1, 3, 64, 64))
    assert (deepest.width, deepest.stride) == (96, 16) and only.shape == (1, 96, 4, 4)


def test_timm_pooled_width_is_the_pre_logits_width():
    # test_mambaout: a pre-logits head widens 64 features to 256 pooled channels
    built = build_backbone("test_mambaout", output="pooled")
    assert built.module.num_features == 64 and built.widths == (256,)
    assert built.module(torch.zeros(2, 3, 32, 32)).shape == (2, 256) and built.stride is None


def test_torchvision_pooled_matches_torchvision_without_its_classifier(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)  # with fc.*, which is dropped
    built = build_backbone("resnet18", library="torchvision", output="pooled", pretrained=path)
    module = built.module.eval()
    x = torch.randn(2, 3, 64, 64)
    reference.fc = torch.nn.Identity()
    assert built.widths == (512,) and torch.equal(module(x), reference(x))
    # the same parameter names as torchvision's ResNet: checkpoints keep their keys
    assert list(module.state_dict()) == list(reference.state_dict())
    features = build_backbone("resnet50", library="torchvision", output_stride=8)
    assert (features.width, features.stride) == (2048, 8)
    assert features.module(torch.zeros(1, 3, 64, 64)).shape == (1, 2048, 8, 8)


def test_the_three_users_build_through_the_factory():
    pose, channels, stride = build_pose_backbone("resnet18")
    assert type(pose.body).__module__ == "bioloop.models.backbones"
    assert (channels, stride) == (512, 32)
    encoder = VisualEncoder("resnet18", "torchvision", d_model=8)
    assert type(encoder.backbone).__module__ == "bioloop.models.backbones"
    from bioloop.models import TimmUNet
    assert TimmUNet(encoder="test_resnet").size_multiple == 32


@pytest.mark.parametrize("kwargs, start", [
    (dict(pretrained=True), "cfg.py: enc: pretrained=True would download weights for "
     "'test_resnet' from the internet, and bioloop works offline"),
    (dict(pretrained=3), "cfg.py: enc: pretrained must be False or the path of a weights file "
     "(got 3)"),
    (dict(library="keras"), "cfg.py: enc: unknown backbone library"),
    (dict(output_stride=12), "cfg.py: enc.output_stride: output_stride must be 8, 16 or 32"),
    (dict(name="resnet18", library="torchvision", output_stride=16),
     "cfg.py: enc.output_stride: resnet18 cannot be dilated (got 16)"),
    (dict(name="vgg16", library="torchvision"), "cfg.py: enc.model_name: the torchvision backend "
     "offers ResNets only"),
    (dict(name="resnet18", library="torchvision", out_indices=(1,)),
     "cfg.py: enc: torchvision backbones give one feature map (layer4)"),
    (dict(name="test_resnett"), "cfg.py: enc.model_name: unknown timm model (got "
     "'test_resnett'); use a name from timm.list_models() (did you mean 'test_resnet'?)"),
    (dict(bogus=1), "cfg.py: enc: timm cannot build 'test_resnet' as a feature extractor with "
     "these settings"),
])
def test_error_messages_name_the_key(kwargs, start):
    kwargs = {"name": "test_resnet", **kwargs}
    with pytest.raises(ConfigError) as info:
        build_backbone(where="cfg.py: enc", name_key="model_name", **kwargs)
    assert str(info.value).startswith(start)


def test_missing_weights_file_and_value_error_for_constructors(tmp_path):
    with pytest.raises(CheckpointError, match=r"cfg\.py: enc\.pretrained: the weights file does "
                                              r"not exist"):
        build_backbone("test_resnet", pretrained=tmp_path / "nope.pth", where="cfg.py: enc")
    with pytest.raises(ValueError, match=r"^pretrained=True would download"):
        check_pretrained(True, name="x", where=None, error=ValueError)
    assert check_pretrained(None, name="x", where="w") is None
    assert check_pretrained(str(tmp_path), name="x", where="w") == tmp_path
