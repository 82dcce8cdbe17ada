"""One backbone factory: a timm or torchvision feature extractor by name, offline only.

``build_backbone(name, library=..., output=...)`` returns a :class:`BuiltBackbone`: the module
and the widths (channels) and strides of what it outputs.

* ``library="timm"``: any ``timm.list_models()`` name. ``output="features"`` builds it with
  ``features_only=True`` (``out_indices`` and ``output_stride`` passed on; the module returns a
  list of maps, shallow to deep); ``output="pooled"`` builds it with ``num_classes=0`` (the
  module returns ``(B, width)``, width = timm's ``head_hidden_size`` where a model has a
  pre-logits head, such as MobileNetV3, else ``num_features``).
* ``library="torchvision"``: the torchvision ResNet family (``resnet*``, ``resnext*``,
  ``wide_resnet*``), keeping torchvision's parameter names. ``output="features"`` returns the
  ``layer4`` map (dilated for ``output_stride`` 16 or 8), ``output="pooled"`` the average-pooled
  ``(B, width)``. Another ``in_channels`` than 3 replaces the first convolution.

Weights never come from the network: ``pretrained=True`` is refused, a path loads a local
timm/torchvision state dict through :func:`bioloop.models.weights.load_weights` (first conv
adapted to ``in_channels``; a mismatch is a CheckpointError naming the file). Errors use the
house format at ``where``; ``error`` picks the class (a model constructor passes ValueError so
that ``build_model`` names the config key).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bioloop.config.structure import did_you_mean
from bioloop.errors import BioloopError, ConfigError, format_message
from bioloop.models.weights import load_weights

__all__ = ["BuiltBackbone", "TorchvisionResNet", "build_backbone", "check_pretrained",
           "classifier_state_keys", "torchvision_names"]

LIBRARIES = ("timm", "torchvision")
OUTPUTS = ("features", "pooled")
_OFFLINE_FIX = ("download the weights file once yourself and set pretrained to its local path, "
                "e.g. pretrained='path/to/weights.pth' (a timm or torchvision "
                ".pth/.pt/.safetensors state dict), or set pretrained=False to train from scratch")


@dataclass(frozen=True)
class BuiltBackbone:
    """A built backbone: ``module``, ``widths``/``strides`` per output (pooled: one width)."""

    module: nn.Module
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    library: str
    output: str

    @property
    def width(self) -> int:
        """The deepest (or pooled) output's number of channels."""
        return self.widths[-1]

    @property
    def stride(self) -> int | None:
        """The deepest feature map's stride; None for a pooled output."""
        return self.strides[-1] if self.strides else None


def _raise(error: type[Exception], where, what: str, got=..., fix: str | None = None):
    if isinstance(error, type) and issubclass(error, BioloopError):
        exc = error.at(where, what, fix=fix) if got is ... else error.at(where, what, got, fix)
    else:
        exc = error(format_message(where, what, fix=fix) if got is ...
                    else format_message(where, what, got, fix))
    raise exc


def check_pretrained(pretrained, *, name: str, where, error: type[Exception] = ConfigError
                     ) -> Path | None:
    """The local weights path, or None for ``False``/``None``; True (a download) is refused."""
    if pretrained is True:
        _raise(error, where, f"pretrained=True would download weights for {name!r} from the "
               "internet, and bioloop works offline (it never uses the network)", True,
               _OFFLINE_FIX)
    if pretrained is False or pretrained is None:
        return None
    if not isinstance(pretrained, (str, os.PathLike)):
        _raise(error, where, "pretrained must be False or the path of a weights file",
               pretrained, "e.g. pretrained='/models/resnet50.pth'")
    return Path(pretrained)


def torchvision_names() -> list[str]:
    """The torchvision ResNet family names this factory builds."""
    import torchvision.models as tvm
    return sorted(n for n in tvm.list_models(module=tvm)
                  if n.startswith(("resnet", "resnext", "wide_resnet")))


def classifier_state_keys(name: str, in_channels: int = 3) -> list[str]:
    """Every state-dict key of timm model ``name`` with its classifier (a checkpoint's keys)."""
    import timm
    return list(timm.create_model(name, pretrained=False, in_chans=in_channels).state_dict())


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet up to ``layer4`` (optionally average-pooled), same parameter names."""

    def __init__(self, net: nn.Module, pooled: bool = False):
        super().__init__()
        for key in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, key, getattr(net, key))
        self.pooled = pooled
        if pooled:
            self.avgpool = net.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1) if self.pooled else x


def build_backbone(name: str, *, library: str = "timm", output: str = "features",
                   in_channels: int = 3, pretrained: bool | str | os.PathLike | None = False,
                   output_stride: int | None = None, out_indices: Sequence[int] | None = None,
                   where="backbone", error: type[Exception] = ConfigError,
                   role: str = "timm model", unknown_fix: str | None = None,
                   suggest: Sequence[str] = (), name_key: str | None = None,
                   **kwargs) -> BuiltBackbone:
    """Build backbone ``name`` (see the module docstring); never downloads.

    ``role``/``unknown_fix``/``suggest`` word the unknown-name error (what the caller calls
    the model, how to fix it, further names for "did you mean"), reported at
    ``where.name_key`` when given; ``kwargs`` go to timm's
    ``create_model`` or torchvision's ``get_model``.
    """
    if library not in LIBRARIES:
        _raise(error, where, f"unknown backbone library{did_you_mean(str(library), LIBRARIES)}",
               library, "use 'timm' or 'torchvision'")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS} (got {output!r})")
    path = check_pretrained(pretrained, name=name, where=where, error=error)
    if output_stride not in (None, 8, 16, 32):
        _raise(error, f"{where}.output_stride" if where else "output_stride",
               "output_stride must be 8, 16 or 32", output_stride,
               "use 16 (DLC default) or 32 (no dilation)")
    make = _timm if library == "timm" else _torchvision
    at_name = f"{where}.{name_key}" if name_key and where else (name_key or where)
    built = make(name, in_channels, output, output_stride, out_indices, kwargs, where, error,
                 role, unknown_fix, suggest, at_name)
    if path is not None:
        load_weights(built.module, path, where=f"{where}.pretrained" if where else "pretrained")
    return built


def _timm(name, in_channels, output, output_stride, out_indices, kwargs, where, error, role,
          unknown_fix, suggest, at_name) -> BuiltBackbone:
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        hint = did_you_mean(str(name), list(suggest) + timm.list_models())
        _raise(error, at_name, f"unknown {role}", name,
               (unknown_fix or "use a name from timm.list_models()") + hint)
    options = dict(kwargs)
    if output == "features":
        options["features_only"] = True
        if out_indices is not None:
            options["out_indices"] = tuple(out_indices)
        if output_stride is not None:
            options["output_stride"] = output_stride
    else:
        options.update(num_classes=0, features_only=False)
    kind = "a feature extractor" if output == "features" else "a pooled encoder"
    try:
        body = timm.create_model(name, pretrained=False, in_chans=in_channels, **options)
    except (TypeError, ValueError, RuntimeError, AssertionError, AttributeError) as exc:
        _raise(error, where, f"timm cannot build {name!r} as {kind} with these settings ({exc})",
               sorted(kwargs) if kwargs else name,
               "drop the settings timm does not accept (such as output_stride), or pick "
               "another model")
    if output == "features":
        info = body.feature_info
        return BuiltBackbone(body, tuple(int(c) for c in info.channels()),
                             tuple(int(r) for r in info.reduction()), "timm", output)
    width = getattr(body, "head_hidden_size", None) or body.num_features
    return BuiltBackbone(body, (int(width),), (), "timm", output)


def _torchvision(name, in_channels, output, output_stride, out_indices, kwargs, where, error,
                 role, unknown_fix, suggest, at_name) -> BuiltBackbone:
    import torchvision.models as tvm

    names = torchvision_names()
    if name not in names:
        _raise(error, at_name, "the torchvision backend offers ResNets only"
               f"{did_you_mean(str(name), names)}", name,
               f"use one of {', '.join(names)}, or a timm model")
    if out_indices is not None:
        _raise(error, where, "torchvision backbones give one feature map (layer4)",
               tuple(out_indices), "drop out_indices or use a timm model")
    dilation = {None: [False] * 3, 32: [False] * 3, 16: [False, False, True],
                8: [False, True, True]}[output_stride]
    if any(dilation) and name in ("resnet18", "resnet34"):
        _raise(error, f"{where}.output_stride" if where else "output_stride",
               f"{name} cannot be dilated", output_stride,
               "use output_stride 32 or resnet50 and up")
    options = dict(kwargs)
    if any(dilation):
        options["replace_stride_with_dilation"] = dilation
    try:
        net = tvm.get_model(name, weights=None, **options)
    except TypeError as exc:
        _raise(error, where, f"torchvision cannot build {name!r} with these settings ({exc})",
               sorted(kwargs), "drop the unknown settings")
    if in_channels != 3:
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                              old.padding, bias=False)
    width = int(net.fc.in_features)
    pooled = output == "pooled"
    return BuiltBackbone(TorchvisionResNet(net, pooled), (width,),
                         () if pooled else (output_stride or 32,), "torchvision", output)
