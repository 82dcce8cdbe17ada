"""Pose backbones: any timm model (``features_only``) or a torchvision ResNet, offline only.

``build_backbone(name)`` returns ``(module, out_channels, stride)``; the module maps images
(B, C, H, W) to its deepest feature map (B, out_channels, ~H/stride, ~W/stride).
Names: the torchvision ResNets ``resnet18/34/50/101/152`` (Lightning Pose's meaning), Lightning
Pose names such as ``resnet50_animal_ap10k`` (the plain ResNet-50 architecture; those weights
are a local file passed as ``pretrained``), LP's ``efficientnet_b*``/ViT names (mapped to the
timm architecture), ``timm/<name>`` to force timm, and any other timm model name. The module
is built by the shared factory ``bioloop.models.backbones`` (parameter names unchanged).

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

from bioloop.errors import ConfigError
from bioloop.models.backbones import build_backbone as build_features
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


def build_backbone(name: str, *, pretrained: bool | str | Path = False, in_channels: int = 3,
                   output_stride: int | None = None, freeze_bn_stats: bool = False,
                   where: str = "model.backbone", **timm_kwargs) -> tuple[Backbone, int, int]:
    """Build backbone ``name``; returns ``(module, out_channels, stride)``. Never downloads.

    The names are resolved here (Lightning Pose's spellings); the shared factory
    ``bioloop.models.backbones.build_backbone`` builds the module and loads local weights.
    """
    if name in _TORCHVISION or name in _LP_RESNET50:
        arch = name if name in _TORCHVISION else "resnet50"  # LP's resnet50_*: plain ResNet-50
        built = build_features(arch, library="torchvision", in_channels=in_channels,
                               pretrained=pretrained, output_stride=output_stride, where=where)
    else:
        timm_name = name[5:] if name.startswith("timm/") else _LP_TIMM.get(name, name)
        if name in _LP_TIMM and timm_name.startswith(("vit", "samvit")):
            timm_kwargs.setdefault("dynamic_img_size", True)
        built = build_features(
            timm_name, library="timm", in_channels=in_channels, pretrained=pretrained,
            output_stride=output_stride, out_indices=(-1,), where=where, role="backbone",
            unknown_fix="use a timm model name, a torchvision ResNet or one of Lightning "
            "Pose's names", suggest=LP_BACKBONES, **timm_kwargs)
    module = Backbone(built.module, built.width, built.stride, name, freeze_bn_stats)
    return module, built.width, built.stride


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
