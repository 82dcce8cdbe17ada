"""The global tracking transformer (GTR/DREEM): crops of a window in, association logits out.

``VisualEncoder`` turns instance crops ``(N, C, H, W)`` into features ``(N, d_model)`` (a timm model
with global pooling, or a torchvision ResNet without ``fc``, then a Linear sized from the encoder's
pooled output: timm's ``head_hidden_size``, which differs from ``num_features`` for models with a
pre-logits head such as MobileNetV3). Any timm family works (ResNet, EfficientNet, MobileNet,
ConvNeXt, ViT...); a ViT needs ``img_size`` = the crop size (or ``dynamic_img_size=True``) among
its encoder settings. The encoder is built by ``bioloop.models.backbones``. Nothing is downloaded:
``pretrained=True`` is refused, a local weights file loads (first conv adapted to ``in_chans``).

``GlobalTrackingTransformer.forward(ref_crops, ref_boxes, ref_times, query_index)`` adds spatial
and temporal embeddings to the crop features of every instance of the window, encodes them with a
transformer encoder, decodes the query instances against that memory and returns association
logits ``(M, N)`` per decoder layer. Instances are processed in one batch; the logits do not depend
on the order of the instances (permutation-equivariant).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError, DataError
from bioloop.models.backbones import build_backbone, check_pretrained
from bioloop.tasks.tracking.embedding import Embedding
from bioloop.tasks.tracking.transformer import (AttentionHead, Decoder, DecoderLayer, Encoder,
                                                EncoderLayer, check_activation)

_BACKENDS = ("timm", "torchvision")
_ENC = "model.encoder_cfg"


class VisualEncoder(nn.Module):
    """Crops ``(N, in_chans, H, W)`` -> features ``(N, d_model)``; see the module docstring."""

    def __init__(self, model_name: str = "resnet18", backend: str = "timm", in_chans: int = 3,
                 d_model: int = 512, pretrained: bool | str | os.PathLike = False, **kwargs):
        super().__init__()
        if backend not in _BACKENDS:
            raise ConfigError.at(f"{_ENC}.backend",
                                 f"unknown backend{did_you_mean(backend, _BACKENDS)}",
                                 got=backend, fix="use 'timm' or 'torchvision'")
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ConfigError.at(f"{_ENC}.in_chans", "in_chans must be a positive integer",
                                 got=in_chans, fix="e.g. in_chans=3 (RGB) or 1 (grayscale)")
        check_pretrained(pretrained, name=model_name, where=f"{_ENC}.pretrained")
        built = build_backbone(model_name, library=backend, output="pooled", in_channels=in_chans,
                               pretrained=pretrained, where=_ENC, name_key="model_name",
                               **kwargs)
        self.backbone, width = built.module, built.width
        self.in_chans, self.d_model = in_chans, int(d_model)
        self.out_layer = nn.Linear(width, self.d_model)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, d_model); an empty batch gives (0, d_model)."""
        if crops.ndim != 4 or crops.shape[1] != self.in_chans:
            raise DataError.at(f"{_ENC}.in_chans", f"crops must be (N, {self.in_chans}, H, W)",
                               got=tuple(crops.shape), fix="set in_chans to the number of crop "
                               "channels (anchors stacked as channels count once each)")
        if len(crops) == 0:
            return crops.new_zeros(0, self.d_model)
        feats = self.backbone(crops.float())
        if feats.ndim != 2 or feats.shape[1] != self.out_layer.in_features:
            raise DataError.at(_ENC, "the encoder's pooled output does not have the width bioloop sized the "
                               f"projection for ({self.out_layer.in_features})", got=tuple(feats.shape),
                               fix="use a timm model with global pooling (num_classes=0), or report the "
                               "model name")
        return self.out_layer(feats)


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError.at(f"model.{name}", f"{name} must be an integer >= {low}", got=value,
                             fix=f"set {name} to an integer >= {low}")
    return value


def _check_rate(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError.at(f"model.{name}", f"{name} must be a probability in [0, 1)", got=value,
                             fix=f"e.g. {name}=0.1")
    return float(value)


def _embedding(kind: str, meta: dict, d_model: int) -> Embedding:
    cfg = dict(meta.get(kind) or {})
    if meta and kind in meta and "mode" not in cfg:
        raise ConfigError.at(f"model.embedding_meta.{kind}", "the embedding needs a mode", got=cfg,
                             fix="add mode='fixed', 'learned' or 'none'")
    return Embedding(kind, cfg.pop("mode", None), d_model, **cfg)


class GlobalTrackingTransformer(nn.Module):
    """GTR: visual encoder + embeddings + transformer encoder/decoder + attention head.

    ``encoder_cfg``: the VisualEncoder settings (``model_name``, ``backend``, ``in_chans``,
    ``pretrained`` and any timm/torchvision keyword); its output size is ``d_model``.
    ``embedding_meta``: ``{"pos": {"mode": ..., **kw}, "temp": {"mode": ..., **kw}}``; a missing
    key (or None) means no embedding of that kind. ``dim_feedforward`` defaults to ``d_model``.
    """

    def __init__(self, encoder_cfg: dict | None = None, d_model: int = 1024, nhead: int = 8,
                 num_encoder_layers: int = 6, num_decoder_layers: int = 6, dropout: float = 0.1,
                 activation: str = "relu", return_intermediate_dec: bool = False,
                 norm: bool = False, num_layers_attn_head: int = 2,
                 dropout_attn_head: float = 0.1, embedding_meta: dict | None = None,
                 return_embedding: bool = False, decoder_self_attn: bool = False,
                 dim_feedforward: int | None = None):
        super().__init__()
        d_model, nhead = _check_int(d_model, "d_model", 1), _check_int(nhead, "nhead", 1)
        if d_model % nhead:
            raise ConfigError.at("model.nhead", f"d_model ({d_model}) must be divisible by nhead",
                                 got=nhead, fix="pick nhead dividing d_model, e.g. 8 for 1024")
        _check_int(num_encoder_layers, "num_encoder_layers", 0)
        _check_int(num_decoder_layers, "num_decoder_layers", 1)
        _check_int(num_layers_attn_head, "num_layers_attn_head", 1)
        dropout, dropout_attn_head = _check_rate(dropout, "dropout"), _check_rate(
            dropout_attn_head, "dropout_attn_head")
        check_activation(activation)
        dim_ff = _check_int(dim_feedforward if dim_feedforward is not None else d_model,
                            "dim_feedforward", 1)
        encoder_cfg = dict(encoder_cfg or {})
        if encoder_cfg.get("d_model", d_model) != d_model:
            raise ConfigError.at(f"{_ENC}.d_model", "the visual encoder's d_model must equal the "
                                 "model's d_model", got=encoder_cfg["d_model"],
                                 fix="drop d_model from encoder_cfg")
        encoder_cfg["d_model"] = d_model
        meta = dict(embedding_meta or {})
        unknown = sorted(set(meta) - {"pos", "temp"})
        if unknown:
            raise ConfigError.at(f"model.embedding_meta.{unknown[0]}", "unknown embedding "
                                 f"kind{did_you_mean(unknown[0], ('pos', 'temp'))}", got=unknown,
                                 fix="embedding_meta takes the keys 'pos' and 'temp'")
        self.d_model = d_model
        self.return_embedding = bool(return_embedding)
        self.visual_encoder = VisualEncoder(**encoder_cfg)
        self.pos_emb = _embedding("pos", meta, d_model)
        self.temp_emb = _embedding("temp", meta, d_model)
        self.encoder = Encoder(EncoderLayer(d_model, nhead, dim_ff, dropout, activation),
                               num_encoder_layers, norm, d_model)
        self.decoder = Decoder(DecoderLayer(d_model, nhead, dim_ff, dropout, activation,
                                            bool(decoder_self_attn)),
                               num_decoder_layers, norm, d_model, bool(return_intermediate_dec))
        self.attn_head = AttentionHead(d_model, num_layers_attn_head, dropout_attn_head)

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops ``(N, C, H, W)`` -> visual features ``(N, d_model)`` (cache them per frame)."""
        return self.visual_encoder(crops)

    def forward(self, ref_crops: torch.Tensor | None, ref_boxes: torch.Tensor,
                ref_times: torch.Tensor, query_index: torch.Tensor, *,
                ref_features: torch.Tensor | None = None) -> dict:
        """Association logits of the query instances against every instance of the window.

        ref_crops (N, C, H, W); ref_boxes (N, 4) x0, y0, x1, y1 normalised to [0, 1]; ref_times
        (N,) integer frame numbers (offsets from the window's first frame are embedded);
        query_index (M,) indices into the references. ``ref_features`` (N, d_model), e.g. cached
        ``encode_crops`` outputs, replaces the visual encoder (ref_crops is then ignored).
        Returns ``{"logits": [(M, N) per decoder layer, last = final]}`` plus ``"embeddings":
        {"pos": (N, d_model), "temp": (N, d_model)}`` when return_embedding.
        """
        feats = self.encode_crops(ref_crops) if ref_features is None else ref_features
        n = len(feats)
        if ref_boxes.shape != (n, 4) or ref_times.shape != (n,):
            raise ValueError(f"ref_boxes {tuple(ref_boxes.shape)} and ref_times "
                             f"{tuple(ref_times.shape)} must be ({n}, 4) and ({n},)")
        query_index = torch.as_tensor(query_index, dtype=torch.long, device=feats.device)
        offsets = ref_times.long() - ref_times.long().min() if n else ref_times.long()
        pos, temp = self.pos_emb(ref_boxes), self.temp_emb(offsets)
        x = feats + pos.to(feats) + temp.to(feats)
        out: dict = {}
        if n == 0 or len(query_index) == 0:
            out["logits"] = [feats.new_zeros(len(query_index), n)
                             for _ in range(len(self.decoder.layers)
                                            if self.decoder.return_intermediate else 1)]
        else:
            memory = self.encoder(x[None])[0]
            decoded = self.decoder(x[query_index][None], memory[None])
            out["logits"] = [self.attn_head(d[0], memory) for d in decoded]
        if self.return_embedding:
            out["embeddings"] = {"pos": pos, "temp": temp}
        return out
