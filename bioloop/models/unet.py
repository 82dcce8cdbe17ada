"""A plain U-Net for 2D (B, C, H, W) and 3D (B, C, D, H, W) inputs.

Each level has two same-padded 3x3(x3) convolutions, each followed by an optional norm and a
ReLU; max-pooling goes down, a transposed convolution (or bilinear/trilinear upsampling plus a
1x1 convolution) goes up, and skips are concatenated. A 1x1 convolution gives raw logits.
Inputs of any spatial size work: they are padded at the end up to a multiple of
``2 ** (depth - 1)`` (reflect where possible, else replicate; tiny inputs get one more step on
the last axis so the coarsest level has more than one voxel) and the output is cropped back.
"""

from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "instance", "group", None)
UPSAMPLES = ("transpose", "bilinear")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r})")


def _check_args(in_channels, out_channels, dims, depth, base_channels, channel_multiplier,
                norm, dropout, upsample) -> None:
    _check_int("in_channels", in_channels, 1)
    _check_int("out_channels", out_channels, 1)
    if type(dims) is not int or dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3 (got {dims!r})")
    _check_int("depth", depth, 1)
    _check_int("base_channels", base_channels, 1)
    if (isinstance(channel_multiplier, bool) or not isinstance(channel_multiplier, Real)
            or not channel_multiplier >= 1):
        raise ValueError(f"channel_multiplier must be a number >= 1 (got {channel_multiplier!r})")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of 'batch', 'instance', 'group' or None (got {norm!r})")
    if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1) (got {dropout!r})")
    if upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be 'transpose' or 'bilinear' (got {upsample!r})")


def _norm(kind: str | None, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        groups = max(g for g in range(1, 9) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class _ConvBlock(nn.Sequential):
    """(conv -> norm -> ReLU) x 2, then optional channel dropout."""

    def __init__(self, cin: int, cout: int, dims: int, norm: str | None, dropout: float):
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers += [conv(c, cout, 3, padding=1, bias=norm is None),
                       _norm(norm, cout, dims), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append((nn.Dropout2d if dims == 2 else nn.Dropout3d)(dropout))
        super().__init__(*layers)


class _Up(nn.Module):
    """Upsample by 2 to ``cout`` channels, concatenate the skip, run a conv block."""

    def __init__(self, cin: int, cout: int, dims: int, norm, dropout: float, mode: str):
        super().__init__()
        if mode == "transpose":
            tconv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
            self.up = tconv(cin, cout, 2, stride=2)
        else:
            conv = nn.Conv2d if dims == 2 else nn.Conv3d
            interp = "bilinear" if dims == 2 else "trilinear"
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode=interp, align_corners=False),
                                    conv(cin, cout, 1))
        self.block = _ConvBlock(2 * cout, cout, dims, norm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net returning raw logits with the same spatial size as its input.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output (one per class).
        dims: 2 for (B, C, H, W) inputs, 3 for (B, C, D, H, W).
        depth: number of resolution levels (``depth - 1`` poolings).
        base_channels: feature channels at the first level.
        channel_multiplier: channel growth per level.
        norm: "batch" (default; keeps absolute intensity, which EM segmentation needs: with
            "instance" a bright cytoplasm patch normalises to look like a nucleus), "instance",
            "group" (up to 8 groups) or None.
        dropout: channel dropout probability after each conv block.
        upsample: "transpose" (learned) or "bilinear" (bilinear/trilinear + 1x1 conv).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, dims: int = 2,
                 depth: int = 4, base_channels: int = 32, channel_multiplier: float = 2,
                 norm: str | None = "batch", dropout: float = 0.0,
                 upsample: str = "transpose"):
        super().__init__()
        _check_args(in_channels, out_channels, dims, depth, base_channels, channel_multiplier,
                    norm, dropout, upsample)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dims, self.depth = dims, depth
        widths = [int(round(base_channels * channel_multiplier ** i)) for i in range(depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_ConvBlock(cin, w, dims, norm, dropout))
            cin = w
        self.up = nn.ModuleList(
            _Up(widths[i + 1], widths[i], dims, norm, dropout, upsample)
            for i in reversed(range(depth - 1)))
        self.head = (nn.Conv2d if dims == 2 else nn.Conv3d)(widths[0], out_channels, 1)
        self._pool = F.max_pool2d if dims == 2 else F.max_pool3d

    @property
    def size_multiple(self) -> int:
        """Spatial sizes that need no internal padding are multiples of this."""
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            layout = "(B, C, H, W)" if self.dims == 2 else "(B, C, D, H, W)"
            raise ValueError(f"UNet(dims={self.dims}, in_channels={self.in_channels}) expects a "
                             f"{layout} input with C={self.in_channels} (got shape "
                             f"{tuple(x.shape)})")
        spatial = x.shape[2:]
        x = self._pad(x)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = self._pool(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        x = self.head(x)
        return x[(..., *(slice(0, s) for s in spatial))]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return pad_end(x, self.size_multiple)


def pad_end(x: torch.Tensor, multiple: int, min_size: int = 0) -> torch.Tensor:
    """Pad the spatial axes of ``x`` at their end up to a multiple of ``multiple``.

    Each axis is at least ``min_size``; when every axis would be exactly one ``multiple`` (a
    1x1(x1) coarsest level, which breaks batch/instance norm) the last axis gets one more step.
    Reflect padding where it fits, else replicate. Crop back with ``x[..., :H, :W]``.
    """
    m = multiple
    sizes = [max(s, min_size) for s in x.shape[2:]]
    extra = [t - s + (-t) % m for s, t in zip(x.shape[2:], sizes)]
    if all(s + e == m for s, e in zip(x.shape[2:], extra)):
        extra[-1] += m  # a 1x1(x1) bottom level would break instance/batch norm
    if not any(extra):
        return x
    pad: list[int] = []
    for e in reversed(extra):  # F.pad wants the last dimension first
        pad += [0, e]
    fits = all(e < s for e, s in zip(extra, x.shape[2:]))
    return F.pad(x, pad, mode="reflect" if fits else "replicate")
