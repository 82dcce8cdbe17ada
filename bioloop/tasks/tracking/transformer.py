"""Transformer encoder/decoder layers and the attention head of the global tracking transformer.

Post-norm layers (as in DETR/GTR) built on ``nn.MultiheadAttention`` over one window: inputs are
``(1, N, d_model)`` (batch first). The decoder may skip self-attention (``decoder_self_attn=False``)
and every feed-forward block supports ``activation`` relu, gelu or glu (a Linear to twice the width,
then ``F.glu``). ``AttentionHead`` turns query and key features into association logits
``(M, N)`` = scaled dot products of MLP projections.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError

ACTIVATIONS = ("relu", "gelu", "glu")


def check_activation(activation: str, where: str = "model.activation") -> str:
    """The activation name, or a ConfigError naming the accepted ones."""
    if activation not in ACTIVATIONS:
        raise ConfigError.at(where, f"unknown activation{did_you_mean(activation, ACTIVATIONS)}",
                             got=activation, fix="use 'relu', 'gelu' or 'glu'")
    return activation


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> Linear; glu doubles the first Linear's width."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, activation: str):
        super().__init__()
        self.activation = check_activation(activation)
        width = 2 * dim_feedforward if activation == "glu" else dim_feedforward
        self.linear1 = nn.Linear(d_model, width)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)
        h = F.glu(h, dim=-1) if self.activation == "glu" else getattr(F, self.activation)(h)
        return self.linear2(self.dropout(h))


class EncoderLayer(nn.Module):
    """Self-attention over all reference instances, then a feed-forward block."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 activation: str):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop1(self.self_attn(x, x, x, need_weights=False)[0]))
        return self.norm2(x + self.drop2(self.ffn(x)))


class DecoderLayer(nn.Module):
    """Optional self-attention among queries, cross-attention to the memory, feed-forward."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 activation: str, self_attn: bool):
        super().__init__()
        self.self_attn = (nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
                          if self_attn else None)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout, activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.drop1, self.drop2, self.drop3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            x = self.norm1(x + self.drop1(self.self_attn(x, x, x, need_weights=False)[0]))
        x = self.norm2(x + self.drop2(self.cross_attn(x, memory, memory, need_weights=False)[0]))
        return self.norm3(x + self.drop3(self.ffn(x)))


class Encoder(nn.Module):
    """A stack of encoder layers, with an optional final LayerNorm."""

    def __init__(self, layer: EncoderLayer, num_layers: int, norm: bool, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class Decoder(nn.Module):
    """A stack of decoder layers; returns every layer's (normed) output or only the last one."""

    def __init__(self, layer: DecoderLayer, num_layers: int, norm: bool, d_model: int,
                 return_intermediate: bool):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.return_intermediate = return_intermediate

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for layer in self.layers:
            x = layer(x, memory)
            if self.return_intermediate:
                outputs.append(self.norm(x))
        return outputs if self.return_intermediate else [self.norm(x)]


def _mlp(d_model: int, num_layers: int, dropout: float) -> nn.Sequential:
    parts: list[nn.Module] = []
    for i in range(num_layers):
        parts.append(nn.Linear(d_model, d_model))
        if i < num_layers - 1:
            parts += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*parts)


class AttentionHead(nn.Module):
    """Association logits ``(M, N) = q(query) @ k(key).T / sqrt(d_model)`` with MLP projections."""

    def __init__(self, d_model: int, num_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.q_proj = _mlp(d_model, num_layers, dropout)
        self.k_proj = _mlp(d_model, num_layers, dropout)
        self.scale = d_model ** -0.5

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """query (M, d), key (N, d) -> logits (M, N)."""
        return (self.q_proj(query) * self.scale) @ self.k_proj(key).transpose(-1, -2)
