"""Pose backbones: any timm model (``features_only``) or a torchvision ResNet, offline only.

``build_backbone(name)`` returns ``(module, out_channels, stride)``; the module maps images
(B, C, H, W) to its deepest feature map (B, out_channels, ~H/stride, ~W/stride).
Names: the torchvision ResNets ``resnet18/34/50/101/152`` (Lightning Pose's meaning), Lightning
Pose names such as ``resnet50_animal_ap10k`` (the plain ResNet-50 architecture; those weights
are a local file passed as ``pretrained``), LP's ``efficientnet_b*``/ViT names (mapped to the
timm architecture), ``timm/<name>`` to force timm, and any other timm model name.

Weights never come from the network: ``pretrained=True`` is refused with a ConfigError; a
path loads a timm or torchvision state dict (classifier keys stripped, first conv adapted when
``in_channels`` is not 3) and any mismatch raises a CheckpointError naming the file.

Unfreezing (Lightning Pose's ``unfreezing_epoch``): the trainer builds ONE optimizer from
``BackboneUnfreezer.param_groups(model, lr)`` (a "head" group and a "backbone" group) and, at
the start of every epoch, AFTER any scheduler step, calls ``unfreezer.apply(model, optimizer,
epoch)``. Before ``unfreezing_epoch`` the backbone has ``requires_grad=False`` and learning rate
0; from then on it trains with lr = head lr * ``backbone_lr_factor * ramp**(epoch -
unfreezing_epoch)`` capped at the head lr (LP's backbone_initial_ratio=0.1 with a 1.5x ramp
is the default). BatchNorm running statistics keep updating while frozen, as in LP.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError
from bioloop.models.weights import load_weights  # re-exported: local timm/torchvision weights

__all__ = ["Backbone", "BackboneUnfreezer", "LP_BACKBONES", "build_backbone", "freeze",
           "load_weights", "unfreeze"]

_TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_LP_RESNET50 = ("resnet50_animal_ap10k", "resnet50_contrastive", "resnet50_animal_apose",
                "resnet50_human_jhmdb", "resnet50_human_res_rle", "resnet50_human_top_rle",
                "resnet50_human_hand")
_LP_TIMM = {"efficientnet_b0": "efficientnet_b0", "efficientnet_b1": "efficientnet_b1",
            "efficientnet_b2": "efficientnet_b2", "vits_dino": "vit_small_patch16_224",
            "vitb_dino": "vit_base_patch16_224", "vits_dinov2": "vit_small_patch14_dinov2",
            "vitb_dinov2": "vit_base_patch14_dinov2", "vits_dinov3": "vit_small_patch16_dinov3",
            "vitb_dinov3": "vit_base_patch16_dinov3", "vitb_imagenet": "vit_base_patch16_224",
            "vitb_sam": "samvit_base_patch16"}
LP_BACKBONES = _TORCHVISION + _LP_RESNET50 + tuple(_LP_TIMM)


class Backbone(nn.Module):
    """Feature extractor wrapper: ``forward`` returns the deepest feature map only.

    ``freeze_bn_stats`` keeps every BatchNorm in eval mode even when the model trains
    (DeepLabCut's option of that name).
    """

    def __init__(self, body: nn.Module, out_channels: int, stride: int, name: str,
                 freeze_bn_stats: bool = False):
        super().__init__()
        self.body, self.out_channels, self.stride, self.name = body, out_channels, stride, name
        self.freeze_bn_stats = freeze_bn_stats

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.body(images)
        return out[-1] if isinstance(out, (list, tuple)) else out

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode and self.freeze_bn_stats:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


class _TorchvisionResNet(nn.Module):
    """torchvision ResNet up to ``layer4``, keeping torchvision's parameter names."""

    def __init__(self, net: nn.Module):
        super().__init__()
        for key in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, key, getattr(net, key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_backbone(name: str, *, pretrained: bool | str | Path = False, in_channels: int = 3,
                   output_stride: int | None = None, freeze_bn_stats: bool = False,
                   where: str = "model.backbone", **timm_kwargs) -> tuple[Backbone, int, int]:
    """Build backbone ``name``; returns ``(module, out_channels, stride)``. Never downloads."""
    if pretrained is True:
        raise ConfigError.at(where, f"pretrained=True would download weights for {name!r} from "
                             "the internet, and bioloop works offline", got=True,
                             fix="download the weights file once yourself and set pretrained "
                             "to its local path (a timm or torchvision .pth/.pt/.safetensors "
                             "state dict), or set pretrained=False to train from scratch")
    if pretrained not in (False, None) and not isinstance(pretrained, (str, Path)):
        raise ConfigError.at(where, "pretrained must be False or a local weights file path",
                             got=pretrained, fix="e.g. pretrained='/models/resnet50.pth'")
    if output_stride not in (None, 8, 16, 32):
        raise ConfigError.at(f"{where}.output_stride", "output_stride must be 8, 16 or 32",
                             got=output_stride, fix="use 16 (DLC default) or 32 (no dilation)")
    if name in _TORCHVISION or name in _LP_RESNET50:
        body, channels, stride = _torchvision(name, in_channels, output_stride, where)
    else:
        timm_name = name[5:] if name.startswith("timm/") else _LP_TIMM.get(name, name)
        if name in _LP_TIMM and timm_name.startswith(("vit", "samvit")):
            timm_kwargs.setdefault("dynamic_img_size", True)
        body, channels, stride = _timm(timm_name, in_channels, output_stride, where, timm_kwargs)
    module = Backbone(body, channels, stride, name, freeze_bn_stats)
    if pretrained not in (False, None):
        load_weights(body, pretrained, where=f"{where}.pretrained")
    return module, channels, stride


def _torchvision(name: str, in_channels: int, output_stride, where: str):
    import torchvision

    arch = name if name in _TORCHVISION else "resnet50"  # LP's resnet50_* names: plain ResNet-50
    dilation = {None: [False] * 3, 32: [False] * 3, 16: [False, False, True],
                8: [False, True, True]}[output_stride]
    if any(dilation) and arch in ("resnet18", "resnet34"):
        raise ConfigError.at(f"{where}.output_stride", f"{arch} cannot be dilated",
                             got=output_stride, fix="use output_stride 32 or resnet50 and up")
    net = getattr(torchvision.models, arch)(weights=None, replace_stride_with_dilation=dilation)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    channels = 512 if arch in ("resnet18", "resnet34") else 2048
    return _TorchvisionResNet(net), channels, output_stride or 32


def _timm(name: str, in_channels: int, output_stride, where: str, kwargs: dict):
    import timm

    if not timm.is_model(name):
        raise ConfigError.at(where, "unknown backbone", got=name,
                             fix="use a timm model name, a torchvision ResNet or one of Lightning "
                             "Pose's names" + did_you_mean(name, list(LP_BACKBONES)
                                                           + timm.list_models()))
    if output_stride is not None:
        kwargs = {**kwargs, "output_stride": output_stride}
    try:
        body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(-1,),
                                 in_chans=in_channels, **kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise ConfigError.at(where, f"timm cannot build {name!r} as a feature extractor ({exc})",
                             got=name, fix="pick another backbone or drop unsupported "
                             "options such as output_stride") from exc
    return body, int(body.feature_info.channels()[-1]), int(body.feature_info.reduction()[-1])


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Let every parameter of ``module`` train again."""
    for p in module.parameters():
        p.requires_grad_(True)
    return module


class BackboneUnfreezer:
    """Lightning Pose's ``unfreezing_epoch`` with a separate backbone learning rate.

    See the module docstring for how the trainer uses ``param_groups`` and ``apply``.
    """

    def __init__(self, unfreezing_epoch: int = 20, backbone_lr_factor: float = 0.1,
                 ramp: float = 1.5, where: str = "training.unfreezing_epoch"):
        if isinstance(unfreezing_epoch, bool) or not isinstance(unfreezing_epoch, int) \
                or unfreezing_epoch < 0:
            raise ConfigError.at(where, "unfreezing_epoch must be an integer >= 0",
                                 got=unfreezing_epoch, fix="e.g. 20 (LP default) or 0")
        if not (backbone_lr_factor > 0 and ramp >= 1):
            raise ConfigError.at(where, "backbone_lr_factor must be > 0 and ramp >= 1",
                                 got=(backbone_lr_factor, ramp), fix="e.g. 0.1 and 1.5")
        self.unfreezing_epoch, self.factor, self.ramp = unfreezing_epoch, backbone_lr_factor, ramp

    def lr_scale(self, epoch: int) -> float:
        """Backbone lr / head lr at ``epoch``: 0 while frozen, then ramping up to at most 1."""
        if epoch < self.unfreezing_epoch:
            return 0.0
        return min(1.0, self.factor * self.ramp ** (epoch - self.unfreezing_epoch))

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """``[{"name": "head", ...}, {"name": "backbone", ...}]`` for one optimizer."""
        backbone = set(map(id, model.backbone.parameters()))
        head = [p for p in model.parameters() if id(p) not in backbone]
        return [{"name": "head", "params": head, "lr": lr},
                {"name": "backbone", "params": list(model.backbone.parameters()),
                 "lr": lr * self.lr_scale(0)}]

    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> bool:
        """Freeze/unfreeze the backbone and set its group's lr for ``epoch``; True if trainable."""
        trainable = epoch >= self.unfreezing_epoch
        (unfreeze if trainable else freeze)(model.backbone)
        groups = {g.get("name"): g for g in optimizer.param_groups}
        if "head" in groups and "backbone" in groups:
            groups["backbone"]["lr"] = groups["head"]["lr"] * self.lr_scale(epoch)
        return trainable
