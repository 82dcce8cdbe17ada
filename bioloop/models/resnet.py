"""A fully-convolutional residual network for 2D and 3D segmentation (csc's ``ResNet``).

Layout (Johnson et al. style, as in the CellMap challenge toolkit): a 7x7(x7) stem convolution,
``n_downsampling`` stride-2 3x3 convolutions (doubling the width), ``n_blocks`` residual blocks
at the coarse resolution, ``n_downsampling`` stride-2 transposed convolutions back up, and a
7x7(x7) convolution to ``out_channels`` logits. The output has the input's spatial size: the
input is padded at the end to a multiple of ``2 ** n_downsampling`` and the output cropped back.
"""

from __future__ import annotations

from numbers import Real

import torch
from torch import nn

from bioloop.models.unet import _check_int, _norm, pad_end

PADDINGS = ("reflect", "replicate", "zeros")


def _check_args(in_channels, out_channels, dims, base_channels, n_blocks, n_downsampling,
                norm, padding, dropout) -> None:
    _check_int("in_channels", in_channels, 1)
    _check_int("out_channels", out_channels, 1)
    if type(dims) is not int or dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3 (got {dims!r})")
    _check_int("base_channels", base_channels, 1)
    _check_int("n_blocks", n_blocks, 0)
    _check_int("n_downsampling", n_downsampling, 0)
    if norm not in ("batch", "instance", "group", None):
        raise ValueError(f"norm must be one of 'batch', 'instance', 'group' or None (got {norm!r})")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 'reflect', 'replicate' or 'zeros' (got {padding!r})")
    if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1) (got {dropout!r})")


def _conv(dims: int, cin: int, cout: int, k: int, padding: str, bias: bool,
          stride: int = 1) -> list[nn.Module]:
    """A same-size (stride 1) or halving (stride 2) convolution with the chosen padding."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    p = k // 2
    if padding == "zeros" or stride > 1:
        return [conv(cin, cout, k, stride=stride, padding=p, bias=bias)]
    pad_cls = {("reflect", 2): nn.ReflectionPad2d, ("reflect", 3): nn.ReflectionPad3d,
               ("replicate", 2): nn.ReplicationPad2d, ("replicate", 3): nn.ReplicationPad3d}
    return [pad_cls[padding, dims](p), conv(cin, cout, k, bias=bias)]


class _ResBlock(nn.Module):
    """x + (conv -> norm -> ReLU -> [dropout] -> conv -> norm)(x)."""

    def __init__(self, width: int, dims: int, norm, padding: str, dropout: float):
        super().__init__()
        bias = norm is None
        layers = [*_conv(dims, width, width, 3, padding, bias), _norm(norm, width, dims),
                  nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [*_conv(dims, width, width, 3, padding, bias), _norm(norm, width, dims)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet(nn.Module):
    """Residual network returning logits with the same spatial size as its input.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output (one per class).
        dims: 2 for (B, C, H, W) inputs, 3 for (B, C, D, H, W).
        base_channels: width after the stem (csc's ``ngf``); doubles at each downsampling.
        n_blocks: residual blocks at the coarsest resolution.
        n_downsampling: stride-2 steps before the blocks (0 keeps full resolution throughout).
        norm: "batch" (default, as bioloop's UNet), "instance" (csc's default), "group" or None.
        padding: "reflect" (default), "replicate" or "zeros" for the stride-1 convolutions.
        dropout: dropout probability inside each residual block (csc's ``use_dropout`` is 0.2).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, dims: int = 2,
                 base_channels: int = 64, n_blocks: int = 6, n_downsampling: int = 2,
                 norm: str | None = "batch", padding: str = "reflect", dropout: float = 0.0):
        super().__init__()
        _check_args(in_channels, out_channels, dims, base_channels, n_blocks, n_downsampling,
                    norm, padding, dropout)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dims, self.n_downsampling = dims, n_downsampling
        bias = norm is None
        layers: list[nn.Module] = [*_conv(dims, in_channels, base_channels, 7, padding, bias),
                                   _norm(norm, base_channels, dims), nn.ReLU(inplace=True)]
        width = base_channels
        for _ in range(n_downsampling):
            layers += [*_conv(dims, width, 2 * width, 3, padding, bias, stride=2),
                       _norm(norm, 2 * width, dims), nn.ReLU(inplace=True)]
            width *= 2
        layers += [_ResBlock(width, dims, norm, padding, dropout) for _ in range(n_blocks)]
        tconv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        for _ in range(n_downsampling):
            layers += [tconv(width, width // 2, 3, stride=2, padding=1, output_padding=1,
                             bias=bias),
                       _norm(norm, width // 2, dims), nn.ReLU(inplace=True)]
            width //= 2
        layers += _conv(dims, width, out_channels, 7, padding, bias=True)
        self.model = nn.Sequential(*layers)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes that need no internal padding are multiples of this."""
        return 2 ** self.n_downsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            layout = "(B, C, H, W)" if self.dims == 2 else "(B, C, D, H, W)"
            raise ValueError(f"ResNet(dims={self.dims}, in_channels={self.in_channels}) expects "
                             f"a {layout} input with C={self.in_channels} (got shape "
                             f"{tuple(x.shape)})")
        spatial = x.shape[2:]
        # reflect padding needs every axis > 3 at full and > 1 at the coarsest resolution
        x = pad_end(x, self.size_multiple, min_size=max(4, 2 * self.size_multiple))
        return self.model(x)[(..., *(slice(0, s) for s in spatial))]
