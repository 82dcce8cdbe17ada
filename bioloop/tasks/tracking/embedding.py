"""Spatial ("pos") and temporal ("temp") embeddings of the global tracking transformer.

``Embedding("pos", mode, d_model)`` maps normalised boxes ``(N, 4)`` (x0, y0, x1, y1 in [0, 1]) to
``(N, d_model)``; ``Embedding("temp", mode, d_model)`` maps integer frame offsets ``(N,)`` (0 = the
oldest frame of the window) to ``(N, d_model)``.

Modes and their keyword arguments:
- ``"fixed"``: sinusoids (``temperature`` = 10000; pos only: ``scale`` = the factor applied to the
  normalised coordinate before the sinusoid, 1000 by default, or 2*pi when ``normalize=True`` as in
  DETR; ``over_boxes`` = also embed the box width and height, default False).
- ``"learned"``: pos = per-coordinate tables of ``emb_num`` (16) learned bins over [0, 1], linearly
  interpolated and summed (``over_boxes`` as above); temp = a table with one learned vector per
  frame offset 0..``emb_num``-1 (randomly initialised, so every frame differs from the start).
- ``"none"`` / ``"None"`` / None: zeros.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError, DataError

_KINDS = ("pos", "temp")
_MODES = ("fixed", "learned", "none")
_ACCEPTED = {
    ("pos", "fixed"): ("temperature", "scale", "normalize", "over_boxes"),
    ("pos", "learned"): ("emb_num", "over_boxes"),
    ("temp", "fixed"): ("temperature",),
    ("temp", "learned"): ("emb_num",),
    ("pos", "none"): (),
    ("temp", "none"): (),
}


def _normalise_mode(mode, where: str) -> str:
    if mode is None or (isinstance(mode, str) and mode.lower() in ("none", "")):
        return "none"
    if isinstance(mode, str) and mode.lower() in _MODES:
        return mode.lower()
    raise ConfigError.at(f"{where}.mode", f"unknown embedding mode{did_you_mean(mode, _MODES)}",
                         got=mode, fix="use 'fixed', 'learned' or 'none'")


def _sinusoid(values: torch.Tensor, dim: int, temperature: float) -> torch.Tensor:
    """(N,) float -> (N, dim): sin/cos pairs at frequencies temperature^(-2i/dim)."""
    half = torch.arange(dim // 2, device=values.device, dtype=torch.float32)
    freq = temperature ** (-2.0 * half / dim)
    angles = values.float()[:, None] * freq[None, :]
    out = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)
    return out if dim % 2 == 0 else torch.cat([out, out.new_zeros(len(out), 1)], dim=1)


class Embedding(nn.Module):
    """A spatial or temporal embedding of size ``d_model``; see the module docstring for modes."""

    def __init__(self, kind: str, mode: str | None, d_model: int, *,
                 where: str = "model.embedding_meta", **kwargs):
        super().__init__()
        where = f"{where}.{kind}"
        if kind not in _KINDS:
            raise ConfigError.at(where, f"unknown embedding kind{did_you_mean(kind, _KINDS)}",
                                 got=kind, fix="use 'pos' (spatial) or 'temp' (temporal)")
        self.kind, self.mode, self.d_model = kind, _normalise_mode(mode, where), int(d_model)
        accepted = _ACCEPTED[(kind, self.mode)]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError.at(f"{where}.{unknown[0]}", f"unknown setting for a {self.mode} "
                                 f"{kind} embedding{did_you_mean(unknown[0], accepted)}",
                                 got=unknown,
                                 fix=f"accepted settings: {', '.join(accepted) or 'none'}")
        self.temperature = float(kwargs.get("temperature", 10000.0))
        self.over_boxes = bool(kwargs.get("over_boxes", False))
        normalize = bool(kwargs.get("normalize", False))
        scale = kwargs.get("scale")
        self.scale = float(scale if scale is not None else (2 * math.pi if normalize else 1000.0))
        self.emb_num = int(kwargs.get("emb_num", 16))
        self.n_coords = 4 if self.over_boxes else 2
        if self.mode == "learned" and self.emb_num < (2 if kind == "pos" else 1):
            raise ConfigError.at(f"{where}.emb_num", "emb_num is too small", got=self.emb_num,
                                 fix="use at least the window size for temp, 2 for pos "
                                 "(default 16)")
        if self.mode == "fixed" and kind == "pos" and self.d_model % (2 * self.n_coords):
            raise ConfigError.at(where, f"a fixed pos embedding needs d_model divisible by "
                                 f"{2 * self.n_coords}", got=self.d_model,
                                 fix=f"pick d_model as a multiple of {2 * self.n_coords}")
        if self.mode == "learned":
            rows = self.emb_num * (self.n_coords if kind == "pos" else 1)
            self.table = nn.Embedding(rows, self.d_model)  # N(0, 1) init: every row differs
        self.where = where

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, mode={self.mode!r}, d_model={self.d_model}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """pos: boxes (N, 4) in [0, 1] -> (N, d_model); temp: frame offsets (N,) -> (N, d_model)."""
        if self.mode == "none":
            return torch.zeros(len(x), self.d_model, device=x.device)
        if self.kind == "temp":
            return self._temporal(x)
        return self._spatial(x)

    def _coords(self, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) x0, y0, x1, y1 -> (N, n_coords) cx, cy[, w, h]."""
        boxes = boxes.float()
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        if not self.over_boxes:
            return centre
        return torch.cat([centre, boxes[:, 2:] - boxes[:, :2]], dim=1)

    def _spatial(self, boxes: torch.Tensor) -> torch.Tensor:
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"pos embedding expects boxes (N, 4), got {tuple(boxes.shape)}")
        coords = self._coords(boxes)
        if self.mode == "fixed":
            dim = self.d_model // self.n_coords
            parts = [_sinusoid(coords[:, i] * self.scale, dim, self.temperature)
                     for i in range(self.n_coords)]
            return torch.cat(parts, dim=1)
        pos = coords.clamp(0, 1) * (self.emb_num - 1)  # (N, n_coords) in bin units
        low = pos.floor().long().clamp(max=self.emb_num - 2)
        frac = (pos - low).unsqueeze(-1)
        offset = torch.arange(self.n_coords, device=boxes.device) * self.emb_num
        lo, hi = self.table(low + offset), self.table(low + 1 + offset)  # (N, n_coords, d)
        return (lo * (1 - frac) + hi * frac).sum(dim=1)

    def _temporal(self, times: torch.Tensor) -> torch.Tensor:
        if times.ndim != 1:
            raise ValueError(f"temp embedding expects frame offsets (N,), got {tuple(times.shape)}")
        if self.mode == "fixed":
            return _sinusoid(times, self.d_model, self.temperature)
        times = times.long()
        if len(times) and (int(times.min()) < 0 or int(times.max()) >= self.emb_num):
            raise DataError.at(f"{self.where}.emb_num", "a frame offset in the window is outside "
                               "the learned temporal table", got=int(times.max()),
                               fix=f"set emb_num larger than the window size (now {self.emb_num})")
        return self.table(times)
