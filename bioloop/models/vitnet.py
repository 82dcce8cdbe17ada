"""ViT-V-Net (Chen et al. 2021, as used by csc's ``vitnet``) for 3D or 2D segmentation.

A small convolutional encoder (``len(encoder_channels) - 1`` max-pool steps), a patch embedding
(a convolution with kernel = stride = ``patch_size``), a pre-norm transformer encoder, a reshape
back to the patch grid, and a convolutional decoder that upsamples by 2 per step with a skip at
every resolution (encoder features, then max-pooled copies of the deepest one) to full size.
Positional embeddings are learned for the grid of ``img_size`` and interpolated for other
input sizes. Inputs must be multiples of ``size_multiple = 2 ** n_down * patch_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from bioloop.models.unet import _check_int, _norm

_VITVNET_DECODER = (96, 48, 32, 32, 16)


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _double_conv(dims: int, cin: int, cout: int) -> nn.Sequential:
    conv = _conv(dims)
    return nn.Sequential(conv(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         conv(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


def _conv_norm_relu(dims: int, cin: int, cout: int, norm) -> nn.Sequential:
    return nn.Sequential(_conv(dims)(cin, cout, 3, padding=1, bias=norm is None),
                         _norm(norm, cout, dims), nn.ReLU(inplace=True))


class _DecoderBlock(nn.Module):
    def __init__(self, dims: int, cin: int, cskip: int, cout: int, norm):
        super().__init__()
        self.mode = "bilinear" if dims == 2 else "trilinear"
        self.convs = nn.Sequential(_conv_norm_relu(dims, cin + cskip, cout, norm),
                                   _conv_norm_relu(dims, cout, cout, norm))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attn_dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _check_channels(name: str, value, minimum_len: int) -> tuple[int, ...]:
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) < minimum_len
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in value)):
        raise ValueError(f"{name} must be a list of at least {minimum_len} positive integers "
                         f"(got {value!r})")
    return tuple(value)


class ViTVNet(nn.Module):
    """ViT-V-Net returning logits with the same spatial size as its input.

    Args:
        in_channels, out_channels: image channels in, classes out.
        dims: 3 (default) for (B, C, D, H, W) inputs, 2 for (B, C, H, W).
        img_size: the input size the positional embeddings are learned for (an int for every
            axis or one per axis); other multiples of ``size_multiple`` work by interpolation.
        patch_size: patch edge on the encoder's feature map (a power of 2).
        embed_dim, depth, num_heads, mlp_dim: transformer width, blocks, heads, MLP width.
        encoder_channels: conv encoder widths, one level per entry (ViT-V-Net: 16, 32, 32).
        decoder_channels: one width per upsampling step, coarse to fine
            (``n_down + log2(patch_size)`` entries); default (96, 48, 32, 32, 16) when 5 steps
            are needed, else the skip widths.
        head_channels: width of the conv after the transformer (ViT-V-Net: 512).
        norm: norm of the decoder convolutions ("batch", "instance", "group" or None).
        dropout, attention_dropout: transformer dropout rates.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, dims: int = 3,
                 img_size: int | Sequence[int] = 128, patch_size: int = 8,
                 embed_dim: int = 252, depth: int = 12, num_heads: int = 12,
                 mlp_dim: int = 3072, encoder_channels: Sequence[int] = (16, 32, 32),
                 decoder_channels: Sequence[int] | None = None, head_channels: int = 512,
                 norm: str | None = "batch", dropout: float = 0.1,
                 attention_dropout: float = 0.0):
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("patch_size", patch_size, 1), ("embed_dim", embed_dim, 1),
                                 ("depth", depth, 0), ("num_heads", num_heads, 1),
                                 ("mlp_dim", mlp_dim, 1), ("head_channels", head_channels, 1)):
            _check_int(name, value, low)
        if type(dims) is not int or dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3 (got {dims!r})")
        if patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of 2 (got {patch_size!r})")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim must be divisible by num_heads (got embed_dim="
                             f"{embed_dim}, num_heads={num_heads})")
        if norm not in ("batch", "instance", "group", None):
            raise ValueError(f"norm must be one of 'batch', 'instance', 'group' or None "
                             f"(got {norm!r})")
        for name, rate in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if isinstance(rate, bool) or not isinstance(rate, Real) or not 0 <= rate < 1:
                raise ValueError(f"{name} must be a number in [0, 1) (got {rate!r})")
        enc = _check_channels("encoder_channels", encoder_channels, 1)
        n_down = len(enc) - 1
        n_up = n_down + int(math.log2(patch_size))
        if n_up < 1:
            raise ValueError("vitnet needs at least one upsampling step: use patch_size >= 2 or "
                             "more than one encoder_channels entry")
        skips = [enc[min(level, n_down)] for level in reversed(range(n_up))]
        if decoder_channels is None:
            decoder_channels = _VITVNET_DECODER if n_up == 5 else tuple(skips)
        dec = _check_channels("decoder_channels", decoder_channels, 1)
        if len(dec) != n_up:
            raise ValueError(f"decoder_channels needs {n_up} entries, one per upsampling step "
                             f"({n_down} conv downsamplings + log2(patch_size={patch_size})) "
                             f"(got {list(dec)!r})")
        sizes = (img_size,) * dims if isinstance(img_size, int) else tuple(img_size)
        self.dims, self.in_channels, self.out_channels = dims, in_channels, out_channels
        self.patch_size, self.n_down = patch_size, n_down
        self.size_multiple = 2 ** n_down * patch_size
        if len(sizes) != dims or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                     or s % self.size_multiple for s in sizes):
            raise ValueError(f"img_size must be {dims} positive multiples of {self.size_multiple}"
                             f" (2**{n_down} conv downsamplings x patch_size {patch_size}) "
                             f"(got {img_size!r})")
        self.grid = tuple(s // self.size_multiple for s in sizes)

        self.inc = _double_conv(dims, in_channels, enc[0])
        self.downs = nn.ModuleList(_double_conv(dims, a, b) for a, b in zip(enc, enc[1:]))
        self.patch_embed = _conv(dims)(enc[-1], embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *self.grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_dim, dropout,
                                           attention_dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.conv_more = _conv_norm_relu(dims, embed_dim, head_channels, norm)
        ins = [head_channels, *dec[:-1]]
        self.decoder = nn.ModuleList(_DecoderBlock(dims, a, s, b, norm)
                                     for a, s, b in zip(ins, skips, dec))
        self.head = _conv(dims)(dec[-1], out_channels, 3, padding=1)
        self._pool = F.max_pool2d if dims == 2 else F.max_pool3d

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise ValueError naming the needed multiple when a spatial ``shape`` does not fit."""
        m = self.size_multiple
        if len(shape) != self.dims or any(s < m or s % m for s in shape):
            low = tuple(max(m, s // m * m) for s in shape)
            high = tuple(max(m, -(-s // m) * m) for s in shape)
            near = f"{low} or {high}" if low != high else f"{low}"
            raise ValueError(f"vitnet: input spatial size {tuple(shape)} must be a multiple of {m}"
                             f" on every axis (2**{self.n_down} conv downsamplings x patch_size "
                             f"{self.patch_size}); use e.g. {near}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            layout = "(B, C, H, W)" if self.dims == 2 else "(B, C, D, H, W)"
            raise ValueError(f"ViTVNet(dims={self.dims}, in_channels={self.in_channels}) expects"
                             f" a {layout} input with C={self.in_channels} (got shape "
                             f"{tuple(x.shape)})")
        self.check_input(tuple(x.shape[2:]))
        features = [self.inc(x)]
        for down in self.downs:
            features.append(down(self._pool(features[-1], 2)))
        feats = features[-1]
        for _ in range(len(self.decoder) - len(features)):  # skips coarser than the encoder
            features.append(self._pool(features[-1], 2))
        tokens = self.patch_embed(feats)
        grid = tokens.shape[2:]
        pos = self.pos_embed
        if tuple(grid) != self.grid:
            pos = F.interpolate(pos, size=grid, mode="bilinear" if self.dims == 2 else "trilinear",
                                align_corners=False)
        t = self.drop((tokens + pos).flatten(2).transpose(1, 2))  # (B, N, E)
        for block in self.blocks:
            t = block(t)
        t = self.norm(t).transpose(1, 2).reshape(tokens.shape)
        y = self.conv_more(t)
        for block, skip in zip(self.decoder, reversed(features[:len(self.decoder)])):
            y = block(y, skip)
        return self.head(y)
