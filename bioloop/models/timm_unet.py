"""A 2D U-Net decoder on any timm encoder (``timm.create_model(..., features_only=True)``).

The encoder's feature maps (e.g. resnet18: strides 2, 4, 8, 16, 32) feed a decoder that, from
the deepest map, upsamples to the next map's size, concatenates it and runs two 3x3 conv ->
norm -> ReLU layers; a last block upsamples to the input size without a skip, and a 1x1 conv
gives logits. Inputs are padded at the end to a multiple of the encoder's largest stride and
the output is cropped back, so every input size works. Nothing is downloaded: ``pretrained``
is False or the path of a local weights file. The encoder is built by the shared factory
(``bioloop.models.backbones``); its weights load with the stricter ``load_encoder_weights`` below
(a tensor the encoder lacks must belong to the timm model's classifier).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bioloop.errors import CheckpointError
from bioloop.models.backbones import build_backbone, check_pretrained, classifier_state_keys
from bioloop.models.unet import _check_int, _norm, pad_end

_DEFAULT_DECODER = (512, 256, 128, 64, 32, 16)


def _create_encoder(encoder: str, in_channels: int) -> nn.Module:
    import timm

    if not isinstance(encoder, str) or not timm.is_model(encoder):
        from bioloop.config.structure import did_you_mean

        hint = did_you_mean(str(encoder), timm.list_models()) if isinstance(encoder, str) else ""
        raise ValueError(f"unknown timm encoder {encoder!r}{hint}; see timm.list_models()")
    return build_backbone(encoder, library="timm", output="features", in_channels=in_channels,
                          where=None, error=ValueError).module


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm):
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers += [nn.Conv2d(c, cout, 3, padding=1, bias=norm is None),
                       _norm(norm, cout, 2), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class TimmUNet(nn.Module):
    """2D U-Net with a timm encoder; logits have the input's spatial size.

    Args:
        in_channels, out_channels: image channels in, classes out.
        encoder: a timm model name (default "resnet18").
        pretrained: False, or the path of a local state dict (a timm/torchvision checkpoint of
            the encoder, a ``{"state_dict": ...}``/``{"model": ...}`` wrapper, or a TimmUNet
            state dict). True is refused: bioloop never downloads weights.
        decoder_channels: one width per encoder feature map, deep to shallow (default: the
            last entries of 512, 256, 128, 64, 32, 16).
        norm: decoder norm, "batch" (default), "instance", "group" or None.
    """

    dims = 2

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *,
                 encoder: str = "resnet18", pretrained: bool | str | os.PathLike = False,
                 decoder_channels: Sequence[int] | None = None, norm: str | None = "batch"):
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("out_channels", out_channels, 1)
        if norm not in ("batch", "instance", "group", None):
            raise ValueError(f"norm must be one of 'batch', 'instance', 'group' or None "
                             f"(got {norm!r})")
        check_pretrained(pretrained, name=encoder, where=None, error=ValueError)
        self.in_channels, self.out_channels, self.encoder_name = in_channels, out_channels, encoder
        self.encoder = _create_encoder(encoder, in_channels)
        channels = list(self.encoder.feature_info.channels())
        self.size_multiple = int(max(self.encoder.feature_info.reduction()))
        n = len(channels)
        if decoder_channels is None:
            decoder_channels = (_DEFAULT_DECODER[-n:] if n <= len(_DEFAULT_DECODER)
                                else (16,) * n)
        if (not isinstance(decoder_channels, Sequence) or isinstance(decoder_channels, str)
                or len(decoder_channels) != n
                or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                       for c in decoder_channels)):
            raise ValueError(f"decoder_channels must be {n} positive integers, one per feature "
                             f"map of {encoder!r} (got {decoder_channels!r})")
        skips = list(reversed(channels))[1:] + [0]
        ins = [channels[-1], *decoder_channels[:-1]]
        self.decoder = nn.ModuleList(_Block(a + s, b, norm)
                                     for a, s, b in zip(ins, skips, decoder_channels))
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, 1)
        if pretrained:
            load_encoder_weights(self.encoder, pretrained,
                                 head_keys=classifier_state_keys(encoder, in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"TimmUNet(in_channels={self.in_channels}) expects a (B, C, H, W) "
                             f"input with C={self.in_channels} (got shape {tuple(x.shape)})")
        spatial = x.shape[2:]
        x = pad_end(x, self.size_multiple)
        features = self.encoder(x)
        y = features[-1]
        targets = list(reversed(features[:-1])) + [None]
        for block, skip in zip(self.decoder, targets):
            size = x.shape[2:] if skip is None else skip.shape[2:]
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            y = block(y if skip is None else torch.cat([y, skip], dim=1))
        return self.head(y)[..., :spatial[0], :spatial[1]]


def _unwrap(obj) -> Mapping:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            return _unwrap(obj[key])
    return obj


def _adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    from timm.models import adapt_input_conv

    try:
        return adapt_input_conv(in_chans, weight, base_chans=weight.shape[1])
    except (NotImplementedError, ValueError):
        return weight


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike,
                         head_keys: Sequence[str] | None = None) -> None:
    """Load a local state dict into ``encoder``; CheckpointError naming ``path`` on failure.

    A TimmUNet state dict (``encoder.`` keys) or a DataParallel one (``module.``) works.
    Keys the encoder lacks must be in ``head_keys`` (the full timm model's classifier);
    every encoder tensor must be present with the same shape,
    except that a first conv for another number of input channels is adapted (timm's
    ``adapt_input_conv``: summed for one channel, repeated and rescaled otherwise).
    """
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise CheckpointError.at(where, "pretrained weights file not found",
                                 fix="pass the path of a local .pth state dict")
    try:
        raw = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise CheckpointError.at(where, "cannot read pretrained weights "
                                 f"({type(exc).__name__}: {exc})",
                                 fix="pass a file saved with torch.save(model.state_dict())"
                                 ) from exc
    state = _unwrap(raw)
    if not isinstance(state, Mapping):
        raise CheckpointError.at(where, "pretrained weights file holds no state dict",
                                 got=type(state).__name__, fix="save model.state_dict()")
    own = encoder.state_dict()
    keys = [str(k) for k in state]
    if any(k.startswith("encoder.") for k in keys):  # a whole TimmUNet: take its encoder
        state = {k[len("encoder."):]: v for k, v in state.items() if str(k).startswith("encoder.")}
    elif keys and all(k.startswith("module.") for k in keys):  # saved from DataParallel
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    found = {str(k): v for k, v in state.items() if str(k) in own and torch.is_tensor(v)}
    if not found:
        example = next(iter(own), "")
        raise CheckpointError.at(where, "no encoder weights found in the file",
                                 fix=f"expected keys like '{example}'; save the encoder's "
                                     f"state_dict() for the same timm model")
    unexpected = [str(k) for k in state
                  if str(k) not in own and str(k) not in (head_keys or ())]
    if unexpected:
        raise CheckpointError.at(where, f"the file has {len(unexpected)} tensors the encoder "
                                 f"lacks (e.g. {', '.join(unexpected[:3])})",
                                 fix="use weights of the same timm model as 'encoder'")
    for key, value in found.items():  # an RGB stem for a grey (or other) input: as timm does
        if value.ndim == 4 and own[key].ndim == 4 and value.shape[1] != own[key].shape[1] \
                and value.shape[0] == own[key].shape[0] and value.shape[2:] == own[key].shape[2:]:
            found[key] = _adapt_input_conv(own[key].shape[1], value)
    missing = [k for k in own if k not in found]
    wrong = [f"{k} {tuple(found[k].shape)} != {tuple(own[k].shape)}"
             for k in found if found[k].shape != own[k].shape]
    if missing or wrong:
        problems = ([f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})"]
                    if missing else []) + ([f"shape mismatch: {'; '.join(wrong[:3])}"]
                                           if wrong else [])
        raise CheckpointError.at(where, "pretrained weights do not fit the encoder: "
                                 + ", ".join(problems),
                                 fix="use weights of the same timm model and in_channels")
    encoder.load_state_dict(found, strict=True)
