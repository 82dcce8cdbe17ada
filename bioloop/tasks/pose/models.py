"""Pose models: heatmap (+ DLC locref), direct regression and Lightning Pose's MHCRNN.

Output strides follow Lightning Pose: ``downsample_factor`` d gives heatmaps at stride ``2**d``
of the input, sized ``heatmap_size((H, W), 2**d)`` = ceil(H / 2**d) x ceil(W / 2**d), exactly
as ``heatmaps.make_heatmaps`` builds targets (the head's output is cropped at the bottom/right,
or bilinearly resized for odd backbone strides, to that size). Heads return raw maps (logits
for kl/js losses, maps for mse). ``build_lp_model`` takes LP settings; ``build_pose_model``
takes a DeepLabCut ``model`` section (keys in ``DLC_KEYS``; unknown keys are refused).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bioloop.config.structure import did_you_mean
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.pose.backbones import Backbone, build_backbone
from bioloop.tasks.pose.heatmaps import heatmap_size

__all__ = ["DLC_KEYS", "DeconvHead", "HeatmapHead", "HeatmapMHCRNN", "HeatmapModel",
           "RegressionModel", "build_lp_model", "build_pose_model", "init_heads",
           "select_more_confident"]

MODEL_TYPES = ("heatmap", "regression", "heatmap_mhcrnn")


class HeatmapHead(nn.Module):
    """Lightning Pose upsampling head: PixelShuffle(2) then ConvTranspose2d(k3, s2) layers.

    Upsamples from ``backbone_stride`` to ``2**downsample_factor`` (a 1x1 conv when equal).
    ``upsample`` is the total factor; ``out_channels`` defaults to ``num_keypoints``.
    """

    def __init__(self, in_channels: int, num_keypoints: int, downsample_factor: int = 2,
                 backbone_stride: int = 32, out_channels: int | None = None):
        super().__init__()
        out = out_channels or num_keypoints
        if isinstance(downsample_factor, bool) or not isinstance(downsample_factor, int) \
                or downsample_factor < 0:
            raise ConfigError.at("data.downsample_factor", "downsample_factor must be an "
                                 "integer >= 0", got=downsample_factor, fix="use 1, 2 or 3")
        steps = math.ceil(math.log2(backbone_stride) - downsample_factor - 1e-9)
        if steps < 0:
            raise ConfigError.at("data.downsample_factor", f"heatmaps at stride "
                                 f"{2 ** downsample_factor} are coarser than the backbone's "
                                 f"features (stride {backbone_stride})", got=downsample_factor,
                                 fix=f"use at most {int(math.log2(backbone_stride))}")
        layers: list[nn.Module] = []
        if steps == 0:
            layers.append(nn.Conv2d(in_channels, out, 1))
        else:
            if in_channels % 4 == 0:
                layers.append(nn.PixelShuffle(2))
                ch = in_channels // 4
            else:
                layers.append(_deconv(in_channels, in_channels, 3, 2))
                ch = in_channels
            for _ in range(steps - 1):
                layers.append(_deconv(ch, out, 3, 2))
                ch = out
            if ch != out:
                layers.append(nn.Conv2d(ch, out, 1))
        self.layers, self.upsample = nn.Sequential(*layers), 2 ** steps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class DeconvHead(nn.Module):
    """DeepLabCut ``heatmap_config``/``locref_config``: ConvTranspose2d layers, ReLU between.

    ``channels`` = [in, ..., out]; one kernel size and stride per layer; each layer multiplies
    the size exactly by its stride.
    """

    def __init__(self, channels: list[int], kernel_size: list[int], strides: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (k, s) in enumerate(zip(kernel_size, strides)):
            layers.append(_deconv(channels[i], channels[i + 1], k, s))
            if i < len(strides) - 1:
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers) if layers else nn.Identity()
        self.upsample = math.prod(strides)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def _deconv(cin: int, cout: int, k: int, s: int) -> nn.Module:
    if s == 1:
        return nn.Conv2d(cin, cout, k, padding=k // 2)
    pad = max(0, math.ceil((k - s) / 2))
    return nn.ConvTranspose2d(cin, cout, k, stride=s, padding=pad, output_padding=s + 2 * pad - k)


def _fit(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop bottom/right to ``size``; resize bilinearly if the maps are smaller."""
    h, w = maps.shape[-2:]
    if h < size[0] or w < size[1]:
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps[..., : size[0], : size[1]]


def _output_stride(backbone: Backbone, head: nn.Module) -> int:
    stride = backbone.stride / head.upsample
    if stride != int(stride) or stride < 1:
        raise ConfigError.at("model.heads", f"backbone stride {backbone.stride} / head "
                             f"upsampling {head.upsample} is not a whole output stride",
                             got=stride, fix="change the head strides or the output_stride")
    return int(stride)


def _check_images(images: torch.Tensor, ndim: int, shape: str) -> None:
    if images.ndim != ndim:
        raise DataError.at("model input", f"images must have shape {shape}",
                           got=tuple(images.shape), fix="batch the images channel-first")


class HeatmapModel(nn.Module):
    """Backbone + heatmap head (+ optional DLC locref head giving 2K offset maps).

    ``forward(images (B, C, H, W))`` -> ``{"heatmaps": (B, K, Hh, Wh)}`` plus ``"offsets"``
    (B, 2K, Hh, Wh) with a locref head. ``stride`` is the heatmap stride in input pixels.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, locref_head: nn.Module | None = None):
        super().__init__()
        self.backbone, self.head, self.locref_head = backbone, head, locref_head
        self.stride = _output_stride(backbone, head)
        if locref_head is not None and _output_stride(backbone, locref_head) != self.stride:
            raise ConfigError.at("model.heads.bodypart.locref_config", "the locref head must "
                                 "upsample like the heatmap head", got=locref_head.upsample,
                                 fix="use the same strides as heatmap_config")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_images(images, 4, "(batch, channels, height, width)")
        size = heatmap_size(images.shape[-2:], self.stride)
        features = self.backbone(images)
        out = {"heatmaps": _fit(self.head(features), size)}
        if self.locref_head is not None:
            out["offsets"] = _fit(self.locref_head(features), size)
        return out


class RegressionModel(nn.Module):
    """Backbone + global average pool + linear -> ``{"keypoints": (B, K, 2)}`` in input pixels.

    The linear layer predicts normalised coordinates ``u`` in [-1, 1] across the image
    (``-1`` = left/top edge, ``+1`` = right/bottom edge), returned as ``"keypoints_normalized"``;
    pixels are ``x = (u + 1) / 2 * W - 0.5``. Train on ``normalize_keypoints(targets)``.
    """

    def __init__(self, backbone: Backbone, num_keypoints: int):
        super().__init__()
        self.backbone, self.num_keypoints = backbone, num_keypoints
        self.head = nn.Linear(backbone.out_channels, 2 * num_keypoints)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_images(images, 4, "(batch, channels, height, width)")
        pooled = self.backbone(images).mean(dim=(-2, -1))
        norm = self.head(pooled).reshape(len(images), self.num_keypoints, 2)
        h, w = images.shape[-2:]
        scale = norm.new_tensor([w, h])
        return {"keypoints": (norm + 1) / 2 * scale - 0.5, "keypoints_normalized": norm}

    @staticmethod
    def normalize_keypoints(xy: torch.Tensor, image_size) -> torch.Tensor:
        """Input pixels -> the normalised [-1, 1] coordinates the head predicts."""
        h, w = image_size
        return (xy + 0.5) / xy.new_tensor([w, h]) * 2 - 1


class _ConvGRUCell(nn.Module):
    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.gates = nn.Conv2d(cin + hidden, 2 * hidden, 3, padding=1)
        self.candidate = nn.Conv2d(cin + hidden, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r, z = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * n


class HeatmapMHCRNN(nn.Module):
    """Lightning Pose ``heatmap_mhcrnn``: static and context heatmaps from frames t-2..t+2.

    ``forward(frames (B, 5, C, H, W))`` -> ``{"heatmaps_sf": static head on frame t,
    "heatmaps_mf": context head}``. The context head runs a bidirectional conv-GRU over the
    five (channel-reduced) feature maps: forward over t-2..t, backward over t+2..t; the two
    states at t are concatenated and upsampled like the static head.
    """

    def __init__(self, backbone: Backbone, num_keypoints: int, downsample_factor: int = 2,
                 hidden_channels: int = 64, frames: int = 5):
        super().__init__()
        self.backbone, self.frames = backbone, frames
        self.head_sf = HeatmapHead(backbone.out_channels, num_keypoints, downsample_factor,
                                   backbone.stride)
        self.reduce = nn.Conv2d(backbone.out_channels, hidden_channels, 1)
        self.gru_fwd = _ConvGRUCell(hidden_channels, hidden_channels)
        self.gru_bwd = _ConvGRUCell(hidden_channels, hidden_channels)
        self.head_mf = HeatmapHead(2 * hidden_channels, num_keypoints, downsample_factor,
                                   backbone.stride)
        self.stride = _output_stride(backbone, self.head_sf)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_images(frames, 5, f"(batch, {self.frames} frames, channels, height, width)")
        b, t = frames.shape[:2]
        if t != self.frames:
            raise DataError.at("model input", f"heatmap_mhcrnn needs {self.frames} frames "
                               "t-2..t+2 per sample", got=t, fix="pass the context window")
        feats = self.backbone(frames.flatten(0, 1))
        return self._heads(feats.reshape(b, t, *feats.shape[1:]), frames.shape[-2:])

    def forward_sequence(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Heatmaps of the middle ``T - (frames - 1)`` frames of consecutive ``frames (T, C, H, W)``.

        The backbone runs once per frame (not once per window position), which makes video
        prediction about ``self.frames`` times cheaper than calling ``forward`` on windows.
        """
        _check_images(frames, 4, "(time, channels, height, width)")
        t, c = frames.shape[0], self.frames // 2
        if t < self.frames:
            raise DataError.at("model input", f"forward_sequence needs at least {self.frames} frames",
                               got=t, fix="pad the sequence by repeating its first and last frames")
        feats = self.backbone(frames)
        index = torch.arange(c, t - c, device=frames.device)[:, None] + \
            torch.arange(-c, c + 1, device=frames.device)[None, :]
        return self._heads(feats[index], frames.shape[-2:])

    def _heads(self, feats: torch.Tensor, image_hw) -> dict[str, torch.Tensor]:
        """Static and context heatmaps from window features (B, frames, C, h, w)."""
        b, t = feats.shape[:2]
        size = heatmap_size(image_hw, self.stride)
        mid = t // 2
        seq = self.reduce(feats.flatten(0, 1)).reshape(b, t, -1, *feats.shape[-2:])
        h_f = torch.zeros_like(seq[:, 0])
        h_b = torch.zeros_like(seq[:, 0])
        for i in range(mid + 1):
            h_f = self.gru_fwd(seq[:, i], h_f)
            h_b = self.gru_bwd(seq[:, t - 1 - i], h_b)
        return {"heatmaps_sf": _fit(self.head_sf(feats[:, mid]), size),
                "heatmaps_mf": _fit(self.head_mf(torch.cat([h_f, h_b], 1)), size)}


def select_more_confident(sf: torch.Tensor, mf: torch.Tensor, *, logits: bool = False,
                          sigma: float = 1.25) -> torch.Tensor:
    """Per (sample, keypoint), the map among ``sf``/``mf`` (B, K, H, W) with the higher confidence
    (``heatmaps.heatmap_confidence``: the peak of mse maps, the mass near the peak for logits).

    Ties keep the static map.
    """
    if sf.shape != mf.shape or sf.ndim != 4:
        raise DataError.at("select_more_confident", "both heatmaps must be (B, K, H, W) of the "
                           "same shape", got=(tuple(sf.shape), tuple(mf.shape)),
                           fix="pass the model's heatmaps_sf and heatmaps_mf")
    from bioloop.tasks.pose.heatmaps import heatmap_confidence

    def score(maps):
        return heatmap_confidence(maps, logits=logits, sigma=sigma)

    use_mf = score(mf) > score(sf)
    return torch.where(use_mf[..., None, None], mf, sf)


def init_heads(model: nn.Module, seed: int = 0, method: str = "xavier_uniform") -> nn.Module:
    """Re-initialise everything outside ``model.backbone`` from ``seed`` (``rng_seed_model_pt``).

    Conv/deconv/linear weights: Xavier-uniform (LP), or ``method="normal"`` N(0, 0.001) (DLC's
    ``weight_init: normal``); biases: 0. Independent of the global RNG.
    """
    gen = torch.Generator().manual_seed(int(seed))
    backbone = set(map(id, model.backbone.modules()))
    for module in model.modules():
        if id(module) in backbone or not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d,
                                                             nn.Linear)):
            continue
        weight = torch.empty_like(module.weight, device="cpu")
        if method == "normal":
            nn.init.normal_(weight, std=0.001, generator=gen)
        else:
            nn.init.xavier_uniform_(weight, generator=gen)
        with torch.no_grad():
            module.weight.copy_(weight)
            if module.bias is not None:
                module.bias.zero_()
    return model


def build_lp_model(model_type: str, backbone: str, num_keypoints: int,
                   downsample_factor: int = 2, pretrained: bool | str = False, *,
                   locref: bool = False, seed: int = 0, in_channels: int = 3,
                   where: str = "model") -> nn.Module:
    """Lightning Pose ``model.model_type`` / ``model.backbone`` / ``data.downsample_factor``.

    Heads are initialised from ``seed`` (``training.rng_seed_model_pt``).
    """
    if model_type not in MODEL_TYPES:
        raise ConfigError.at(f"{where}.model_type", "unknown model type", got=model_type,
                             fix="use one of " + ", ".join(map(repr, MODEL_TYPES))
                             + did_you_mean(str(model_type), MODEL_TYPES))
    if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, int) \
            or num_keypoints < 1:
        raise ConfigError.at("data.num_keypoints", "num_keypoints must be a positive integer",
                             got=num_keypoints, fix="count the body parts in the labels file")
    net, channels, stride = build_backbone(backbone, pretrained=pretrained,
                                           in_channels=in_channels, where=f"{where}.backbone")
    if model_type == "regression":
        model: nn.Module = RegressionModel(net, num_keypoints)
    elif model_type == "heatmap_mhcrnn":
        model = HeatmapMHCRNN(net, num_keypoints, downsample_factor)
    else:
        head = HeatmapHead(channels, num_keypoints, downsample_factor, stride)
        loc = HeatmapHead(channels, num_keypoints, downsample_factor, stride,
                          out_channels=2 * num_keypoints) if locref else None
        model = HeatmapModel(net, head, loc)
    return init_heads(model, seed)


_TYPED = {"ResNet": ("model_name", "output_stride", "freeze_bn_stats", "freeze_bn_weights",
                     "pretrained", "drop_path_rate", "drop_block_rate"),
          "HRNet": ("model_name", "pretrained", "interpolate_branches",
                    "increased_channel_count", "freeze_bn_stats", "freeze_bn_weights"),
          "HeatmapPredictor": ("apply_sigmoid", "clip_scores", "location_refinement",
                               "locref_std"),
          "HeatmapPlateauGenerator": ("num_heatmaps", "pos_dist_thresh", "heatmap_mode",
                                      "generate_locref", "locref_std"),
          "WeightedMSECriterion": ("weight",), "WeightedBCECriterion": ("weight",),
          "WeightedHuberCriterion": ("weight",)}
_TYPED["HeatmapGaussianGenerator"] = _TYPED["HeatmapPlateauGenerator"]
_DECONV = ("channels", "kernel_size", "strides")
DLC_KEYS = {"model": ("backbone", "backbone_output_channels", "neck", "heads"),
            "backbone": ("ResNet", "HRNet"),
            "head": ("type", "weight_init", "predictor", "target_generator", "criterion",
                     "heatmap_config", "locref_config"),
            "predictor": ("HeatmapPredictor",),
            "target_generator": ("HeatmapPlateauGenerator", "HeatmapGaussianGenerator"),
            "criterion": ("heatmap", "locref"),
            "criterion_type": ("WeightedMSECriterion", "WeightedBCECriterion",
                               "WeightedHuberCriterion"),
            "heatmap_config": _DECONV, "locref_config": _DECONV}


def _keys(section, allowed, where: str, problems: list[str]) -> dict:
    if not isinstance(section, dict):
        problems.append(f"{where}: must be a mapping (got {section!r}); write it as key: value")
        return {}
    for key in section:
        if key not in allowed:
            problems.append(f"{where}.{key}: unknown key; allowed: {', '.join(allowed)}"
                            + did_you_mean(str(key), allowed))
    return section


def _typed(section, types, where: str, problems: list[str]) -> dict:
    if not isinstance(section, dict) or section.get("type") not in types:
        got = section.get("type") if isinstance(section, dict) else section
        problems.append(f"{where}.type: unsupported type (got {got!r}); use one of "
                        + ", ".join(types) + did_you_mean(str(got), types))
        return {}
    return _keys(section, ("type",) + _TYPED[section["type"]], where, problems)


def _channels(values, k: int, where: str, problems: list[str]) -> list[int]:
    names = {"num_bodyparts": k, "num_bodyparts x 2": 2 * k}
    out = [names.get(v, v) if isinstance(v, str) else v for v in values]
    if not all(isinstance(v, int) and v > 0 for v in out):
        problems.append(f"{where}.channels: channels must be positive integers (got {values!r})"
                        "; e.g. [2048, num_bodyparts]")
    return out


def _deconv_head(cfg: dict, cin: int, cout: int, k: int, where: str, problems: list[str]):
    ch = _channels(cfg.get("channels", [cin, cout]), k, where, problems)
    ks, st = cfg.get("kernel_size", [3]), cfg.get("strides", [2])
    if problems:
        return None
    if not (len(ch) == len(ks) + 1 == len(st) + 1 and ch[0] == cin and ch[-1] == cout):
        problems.append(f"{where}: channels must be [{cin}, ..., {cout}] with one kernel_size "
                        f"and stride per layer (got channels={ch}, kernel_size={ks}, "
                        f"strides={st}); match backbone_output_channels and the keypoints")
        return None
    return DeconvHead(ch, ks, st)


def build_pose_model(spec: dict, *, num_keypoints: int, where: str = "model",
                     seed: int = 0) -> HeatmapModel:
    """Build a HeatmapModel from a DeepLabCut ``model`` section (one ``bodypart`` head).

    ``model.dlc_settings`` keeps the head's predictor/target_generator/criterion sections for
    the task to build targets, losses and decoding. Unknown keys or types raise one
    ConfigError listing every problem with its key path and a did-you-mean hint.
    """
    problems: list[str] = []
    spec = _keys(spec, DLC_KEYS["model"], where, problems)
    bb = _typed(spec.get("backbone"), DLC_KEYS["backbone"], f"{where}.backbone", problems)
    if spec.get("neck") is not None:
        problems.append(f"{where}.neck: necks are not supported (got {spec['neck']!r}); "
                        "remove the neck section")
    if bb.get("interpolate_branches"):
        problems.append(f"{where}.backbone.interpolate_branches: not supported (got True); "
                        "set it to false")
    heads = _keys(spec.get("heads", {}), ("bodypart",), f"{where}.heads", problems)
    hw = f"{where}.heads.bodypart"
    head: dict = {}
    if "bodypart" in heads:
        head = _keys(heads["bodypart"], DLC_KEYS["head"], hw, problems)
    else:
        problems.append(f"{hw}: missing; add a HeatmapHead section")
    if head and head.get("type") != "HeatmapHead":
        problems.append(f"{hw}.type: unsupported head type (got {head.get('type')!r}); "
                        "use HeatmapHead" + did_you_mean(str(head.get("type")), ["HeatmapHead"]))
    settings = {"weight_init": head.get("weight_init", "normal")}
    if settings["weight_init"] not in ("normal", "xavier_uniform"):
        problems.append(f"{hw}.weight_init: unknown initialisation (got "
                        f"{settings['weight_init']!r}); use 'normal' or 'xavier_uniform'")
    for part in ("predictor", "target_generator"):
        if part in head:
            settings[part] = _typed(head[part], DLC_KEYS[part], f"{hw}.{part}", problems)
    crit = _keys(head.get("criterion", {}), DLC_KEYS["criterion"], f"{hw}.criterion", problems)
    settings["criterion"] = {n: _typed(c, DLC_KEYS["criterion_type"], f"{hw}.criterion.{n}",
                                       problems) for n, c in crit.items()}
    for part in ("heatmap_config", "locref_config"):
        _keys(head.get(part, {}), _DECONV, f"{hw}.{part}", problems)
    if problems:
        raise ConfigError.many(problems)
    net, channels, _ = build_backbone(
        bb.get("model_name", "resnet50_gn" if bb["type"] == "ResNet" else "hrnet_w32"),
        pretrained=bb.get("pretrained", False), output_stride=bb.get("output_stride"),
        freeze_bn_stats=bool(bb.get("freeze_bn_stats", False)), where=f"{where}.backbone",
        **{k: bb[k] for k in ("drop_path_rate", "drop_block_rate") if k in bb})
    if bb.get("freeze_bn_weights"):
        for m in net.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                m.requires_grad_(False)
    declared = spec.get("backbone_output_channels", channels)
    if declared != channels:
        problems.append(f"{where}.backbone_output_channels: {bb.get('model_name')} gives "
                        f"{channels} channels (got {declared!r}); set it to {channels}")
    hm_cfg = head.get("heatmap_config", {})
    hm = _deconv_head(hm_cfg, channels, num_keypoints, num_keypoints, f"{hw}.heatmap_config",
                      problems)
    locref = settings.get("predictor", {}).get("location_refinement", False) \
        or "locref_config" in head
    loc_cfg = head.get("locref_config", {k: v for k, v in hm_cfg.items() if k != "channels"})
    loc = _deconv_head(loc_cfg, channels, 2 * num_keypoints, num_keypoints,
                       f"{hw}.locref_config", problems) if locref else None
    if problems:
        raise ConfigError.many(problems)
    model = HeatmapModel(net, hm, loc)
    model.dlc_settings = settings
    return init_heads(model, seed, "normal" if settings["weight_init"] == "normal"
                      else "xavier_uniform")
