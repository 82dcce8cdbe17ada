"""Heatmap targets, subpixel decoding, DLC location-refinement offsets and heatmap losses.

Coordinates. Keypoints are (x, y) in input-image pixels with pixel centres at integers (pixel
(0, 0) covers [-0.5, 0.5)); NaN marks a missing point. A heatmap made with downsample factor
``stride`` has ``Hh = ceil(H / stride)`` rows and ``Wh = ceil(W / stride)`` columns, and the
centre of heatmap pixel ``j`` sits at input coordinate ``j * stride + (stride - 1) / 2`` (the
centre of the ``stride`` input pixels it covers). Encoding and decoding use this same mapping,
so a decoded map gives back the encoded coordinate exactly (up to float rounding).

Everything is vectorised over batch and keypoints; nothing loops in Python per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from bioloop.config.structure import did_you_mean as _did_you_mean
from bioloop.errors import ConfigError, DataError

__all__ = ["DLC_LOCREF_STD", "confidence_radius", "heatmap_confidence", "ideal_mass", "soft_argmax", "decode_heatmaps", "decode_with_offsets", "encode_offsets",
           "heatmap_loss", "heatmap_size", "make_heatmaps", "to_heatmap_coords",
           "to_input_coords"]

DLC_LOCREF_STD = 7.2801  # DeepLabCut's default locref_stdev
_KINDS = ("gaussian", "plateau")
_NAN_MODES = ("uniform", "zero")
_NORMALIZE = ("peak", "sum")
_LOSSES = ("mse", "kl", "js")
_CONFIDENCE = ("peak", "mass")
_TINY = 1e-30  # floor before log() of a non-negative map


def _choice(where: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError.at(where, "unknown value", got=value,
                             fix="use one of " + ", ".join(map(repr, choices))
                             + _did_you_mean(str(value), choices))
    return value


def _check_stride(stride) -> int:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ConfigError.at("downsample_factor", "the heatmap stride must be a positive integer",
                             got=stride, fix="use 1, 2, 4 or 8 (the model's output stride)")
    return stride


def heatmap_size(image_size: Sequence[int], stride: int) -> tuple[int, int]:
    """(Hh, Wh) = (ceil(H / stride), ceil(W / stride))."""
    stride = _check_stride(stride)
    h, w = (int(v) for v in image_size)
    if h < 1 or w < 1:
        raise DataError.at("image_size", "the image size must be positive (H, W)",
                           got=tuple(image_size), fix="pass the (height, width) of the input")
    return math.ceil(h / stride), math.ceil(w / stride)


def to_heatmap_coords(xy: torch.Tensor, stride: int) -> torch.Tensor:
    """Input-pixel coordinates -> heatmap-pixel coordinates (u = (x - (stride-1)/2) / stride)."""
    return (xy - (stride - 1) / 2) / stride


def to_input_coords(uv: torch.Tensor, stride: int) -> torch.Tensor:
    """Heatmap-pixel coordinates -> input-pixel coordinates (x = u * stride + (stride-1)/2)."""
    return uv * stride + (stride - 1) / 2


def _keypoints(keypoints) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, 2) float tensor with NaN rows zeroed, and the (B, K) mask of finite rows."""
    kp = torch.as_tensor(keypoints)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise DataError.at("keypoints", "keypoints must have shape (batch, keypoints, 2)",
                           got=tuple(kp.shape), fix="pass (x, y) pixel coordinates per keypoint")
    if not kp.is_floating_point():
        kp = kp.float()
    valid = torch.isfinite(kp).all(dim=-1)
    return torch.where(valid[..., None], kp, torch.zeros_like(kp)), valid


def _grid(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, device=like.device, dtype=like.dtype)


def make_heatmaps(keypoints, image_size: Sequence[int], stride: int, sigma: float,
                  kind: str = "gaussian", nan_mode: str = "uniform",
                  normalize: str = "peak") -> tuple[torch.Tensor, torch.Tensor]:
    """Target heatmaps (B, K, Hh, Wh) and the (B, K) mask of labelled (finite) keypoints.

    ``sigma`` is in heatmap pixels. ``kind="gaussian"``: exp(-d^2 / (2 sigma^2)) with d the
    distance from the pixel centre to the keypoint, so the peak amplitude is 1 (the max pixel
    is 1 when the keypoint sits on a pixel centre), the target for an mse loss.
    ``kind="plateau"`` (DeepLabCut): 1 where d <= sigma, else 0. ``normalize="sum"`` divides
    each map by its sum so it is a probability distribution (for kl/js); a map with nothing
    inside it (plateau far outside the image) stays zero.
    Missing keypoints give a uniform map of 1/(Hh*Wh) (``nan_mode="uniform"``, Lightning
    Pose's ``uniform_heatmaps_for_nan_keypoints: true``) or a zero map (``"zero"``). Their
    mask entry is False either way: pass ``valid`` to ``heatmap_loss`` to drop them, or an
    all-True mask to train toward uniform maps.
    """
    kind = _choice("heatmap kind", kind, _KINDS)
    nan_mode = _choice("uniform_heatmaps_for_nan_keypoints (nan_mode)", nan_mode, _NAN_MODES)
    normalize = _choice("heatmap normalize", normalize, _NORMALIZE)
    hh, wh = heatmap_size(image_size, stride)
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError.at("sigma", "the heatmap sigma must be a positive number",
                             got=sigma, fix="give it in heatmap pixels, e.g. 2.0")
    kp, valid = _keypoints(keypoints)
    uv = to_heatmap_coords(kp, stride)
    dx = _grid(wh, uv) - uv[..., 0, None]  # (B, K, Wh)
    dy = _grid(hh, uv) - uv[..., 1, None]  # (B, K, Hh)
    if kind == "gaussian":
        ex, ey = -dx**2 / (2 * sigma**2), -dy**2 / (2 * sigma**2)
        # separable: the 2D map (or its 2D softmax) is an outer product of 1D factors
        if normalize == "sum":
            gx, gy = torch.softmax(ex, dim=-1), torch.softmax(ey, dim=-1)
        else:
            gx, gy = torch.exp(ex), torch.exp(ey)
        b, k = valid.shape
        maps = torch.bmm(gy.reshape(b * k, hh, 1), gx.reshape(b * k, 1, wh)).reshape(b, k, hh, wh)
    else:
        maps = dy[..., :, None] ** 2 + dx[..., None, :] ** 2
        maps.le_(sigma**2)  # in place: 1.0 inside the disc, 0.0 outside
        if normalize == "sum":
            maps /= maps.sum(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    maps[~valid] = 1.0 / (hh * wh) if nan_mode == "uniform" else 0.0
    return maps, valid


def _argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column (B, K) of each map's maximum (the first one on ties)."""
    w = heatmaps.shape[-1]
    idx = heatmaps.flatten(-2).argmax(dim=-1)
    return idx // w, idx % w


def _window(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, radius: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, K, n, n) values around (rows, cols), their in-image mask and pixel ys, xs."""
    h, w = values.shape[-2:]
    steps = torch.arange(-radius, radius + 1, device=values.device)
    ys = rows[..., None] + steps  # (B, K, n)
    xs = cols[..., None] + steps
    inside = ((ys >= 0) & (ys < h))[..., :, None] & ((xs >= 0) & (xs < w))[..., None, :]
    lin = ys.clamp(0, h - 1)[..., :, None] * w + xs.clamp(0, w - 1)[..., None, :]
    n = 2 * radius + 1
    got = values.flatten(-2).gather(-1, lin.flatten(-2)).reshape(*rows.shape, n, n)
    return got, inside, ys, xs


def _taylor(log_maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, floor: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Second-order (DARK) refinement of the peak of a log heatmap: x, y and an ok mask.

    The 3x3 stencil is centred on the argmax, moved inward at the borders; the vertex of the
    fitted quadratic is exact when the log map is quadratic (a Gaussian), even when the peak
    lies in a border pixel or just outside the grid. A stencil touching ``floor`` (a zero
    pixel, e.g. the edge of a plateau) is not trusted.
    """
    h, w = log_maps.shape[-2:]
    cy, cx = rows.clamp(1, h - 2), cols.clamp(1, w - 2)
    p, _, _, _ = _window(log_maps, cy, cx, 1)
    gx = (p[..., 1, 2] - p[..., 1, 0]) / 2
    gy = (p[..., 2, 1] - p[..., 0, 1]) / 2
    hxx = p[..., 1, 2] - 2 * p[..., 1, 1] + p[..., 1, 0]
    hyy = p[..., 2, 1] - 2 * p[..., 1, 1] + p[..., 0, 1]
    hxy = (p[..., 2, 2] - p[..., 2, 0] - p[..., 0, 2] + p[..., 0, 0]) / 4
    det = hxx * hyy - hxy**2
    x = cx - (hyy * gx - hxy * gy) / det
    y = cy - (hxx * gy - hxy * gx) / det
    ok = (hxx < 0) & (det > 0) & torch.isfinite(x) & torch.isfinite(y)
    ok &= (p > floor).flatten(-2).all(dim=-1)
    ok &= ((x - cols).abs() <= 1) & ((y - rows).abs() <= 1)
    return x, y, ok


def _centroid(maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, radius: int = 2
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Local soft-argmax: weighted mean of pixel centres in a window around the argmax."""
    vals, inside, ys, xs = _window(maps, rows, cols, radius)
    wts = torch.where(inside, vals.clamp_min(0), torch.zeros_like(vals))
    total = wts.sum(dim=(-2, -1))
    x = (wts * xs[..., None, :].to(wts.dtype)).sum(dim=(-2, -1)) / total
    y = (wts * ys[..., :, None].to(wts.dtype)).sum(dim=(-2, -1)) / total
    empty = total <= 0
    return (torch.where(empty, cols.to(x.dtype), x), torch.where(empty, rows.to(y.dtype), y))


def _check_maps(heatmaps: torch.Tensor, name: str = "heatmaps") -> torch.Tensor:
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.ndim != 4:
        raise DataError.at(name, "heatmaps must be a 4D tensor (batch, keypoints, H, W)",
                           got=tuple(getattr(heatmaps, "shape", ())),
                           fix="pass the head output before any reshaping")
    return heatmaps


def confidence_radius(sigma: float) -> int:
    """Half-width (heatmap pixels) of the window whose probability mass is the confidence.

    Lightning Pose sums the normalised heatmap over the pixels within two standard deviations of
    the prediction (``floor(2 * sigma)``); at least 1, so a window is never a single pixel.
    """
    return max(1, int(math.floor(2.0 * float(sigma))))


def ideal_mass(sigma: float) -> float:
    """Share of a Gaussian target of width ``sigma`` (on a pixel centre) inside its confidence window.

    The target is separable, so the share is ``(sum_{|d|<=r} g(d) / sum_d g(d)) ** 2`` with
    ``g(d) = exp(-d^2 / (2 sigma^2))`` and ``r = confidence_radius(sigma)``; e.g. 0.922 for sigma 1.25.
    """
    r = confidence_radius(sigma)
    span = r + int(math.ceil(12 * float(sigma))) + 1
    g = [math.exp(-(d * d) / (2.0 * float(sigma) ** 2)) for d in range(-span, span + 1)]
    inner = sum(g[span - r:span + r + 1])
    return (inner / sum(g)) ** 2


def _pick_confidence(confidence, logits: bool) -> str:
    if confidence is None:
        return "mass" if logits else "peak"
    confidence = _choice("heatmap confidence", confidence, _CONFIDENCE)
    if confidence == "peak" and logits:
        raise DataError.at("heatmap confidence", "logit maps (kl/js models) have no absolute peak scale",
                           got=confidence, fix="use confidence='mass' (the default for logits)")
    return confidence


def _confidence(maps: torch.Tensor, logits: bool, mode: str, rows: torch.Tensor,
                cols: torch.Tensor, sigma: float) -> torch.Tensor:
    if mode == "peak":  # peak-normalised maps: the target's maximum is 1
        conf = maps.flatten(-2).amax(dim=-1)
    else:
        work = maps.double()
        if logits:
            prob = torch.softmax(work.flatten(-2), dim=-1).reshape(maps.shape)
        else:
            pos = work.clamp_min(0)
            prob = pos / pos.sum(dim=(-2, -1), keepdim=True).clamp_min(_TINY)
        vals, inside, _, _ = _window(prob, rows, cols, confidence_radius(sigma))
        mass = torch.where(inside, vals, torch.zeros_like(vals)).sum(dim=(-2, -1))
        conf = (mass / ideal_mass(sigma)).to(maps.dtype)  # a map as sharp as the target scores 1
    return conf.clamp(0, 1)


def heatmap_confidence(heatmaps: torch.Tensor, *, logits: bool = False, confidence: str | None = None,
                       sigma: float = 1.25) -> torch.Tensor:
    """The (B, K) confidence in [0, 1] that ``decode_heatmaps`` reports, without decoding positions."""
    maps = _check_maps(heatmaps).detach()
    mode = _pick_confidence(confidence, logits)
    rows, cols = _argmax(maps)
    return _confidence(maps, logits, mode, rows, cols, sigma)


def decode_heatmaps(heatmaps: torch.Tensor, stride: int, *, logits: bool = False,
                    confidence: str | None = None, sigma: float = 1.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Subpixel keypoints (B, K, 2) in input pixels and a confidence (B, K) in [0, 1].

    The peak is refined with a second-order Taylor step on the log map around the argmax
    (DARK; exact for Gaussian maps, including border pixels). Where the log map is not
    peaked there (flat plateaus, zero or uniform maps) a 5x5 local soft-argmax is used.
    ``logits=True``: the maps are raw scores whose spatial softmax is the distribution
    (its log is the scores up to a constant).

    Confidence, in [0, 1], as the field defines it. ``"peak"`` (the default for peak-normalised
    maps, the mse models; DeepLabCut's score): the map's maximum, clipped — about 1 for a
    confident Gaussian, near 0 for a flat map. ``"mass"`` (the default, and the only choice, for
    logits, the kl/js models; Lightning Pose's): the probability mass of the softmaxed
    (sum-normalised, for maps) heatmap within ``confidence_radius(sigma)`` pixels of the argmax,
    ``sigma`` being the target's width in heatmap pixels, divided by the mass the training target
    itself holds there (``ideal_mass``) and clipped — 1 for a peak as sharp as the target, about the
    window's share of the pixels for a uniform map (an absent or hidden keypoint). The division keeps
    thresholds such as ``confidence_thresh_for_vid = 0.9`` reachable for any sigma.
    """
    heatmaps = _check_maps(heatmaps)
    stride = _check_stride(stride)
    confidence = _pick_confidence(confidence, logits)
    maps = heatmaps.detach()
    rows, cols = _argmax(maps)
    work = maps.double()
    h, w = maps.shape[-2:]
    if h >= 3 and w >= 3:
        log_maps = work if logits else work.clamp_min(_TINY).log()
        x, y, ok = _taylor(log_maps, rows, cols, -math.inf if logits else math.log(_TINY))
    else:
        x = y = work.new_zeros(rows.shape)
        ok = torch.zeros_like(rows, dtype=torch.bool)
    if not bool(ok.all()):
        local = torch.exp(work - work.flatten(-2).amax(-1)[..., None, None]) if logits else work
        fx, fy = _centroid(local, rows, cols)
        x, y = torch.where(ok, x, fx), torch.where(ok, y, fy)
    xy = to_input_coords(torch.stack([x, y], dim=-1), stride).to(heatmaps.dtype)
    return xy, _confidence(maps, logits, confidence, rows, cols, sigma)


def encode_offsets(keypoints, image_size: Sequence[int], stride: int, radius: float,
                   locref_std: float = DLC_LOCREF_STD) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLabCut location-refinement targets: offsets (B, 2K, Hh, Wh) and mask (B, K, Hh, Wh).

    Channels ``2k`` and ``2k+1`` hold ``(x_k - x_pixel) / locref_std`` and
    ``(y_k - y_pixel) / locref_std``, with (x_pixel, y_pixel) the heatmap pixel's centre in
    input pixels. Only pixels whose centre lies within ``radius`` INPUT pixels of the keypoint
    (DLC's ``pos_dist_thresh``) are set and have mask 1; the rest, and every pixel of a
    missing keypoint, are 0.
    """
    hh, wh = heatmap_size(image_size, stride)
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise ConfigError.at("locref radius (pos_dist_thresh)", "the radius must be a positive "
                             "number of input pixels", got=radius, fix="e.g. 17 (DLC default)")
    if not (isinstance(locref_std, (int, float)) and locref_std > 0):
        raise ConfigError.at("locref_std", "locref_std must be a positive number",
                             got=locref_std, fix=f"use DeepLabCut's default {DLC_LOCREF_STD}")
    kp, valid = _keypoints(keypoints)
    dx = kp[..., 0, None] - to_input_coords(_grid(wh, kp), stride)  # (B, K, Wh)
    dy = kp[..., 1, None] - to_input_coords(_grid(hh, kp), stride)  # (B, K, Hh)
    mask = (dy[..., :, None] ** 2 + dx[..., None, :] ** 2 <= radius**2) & valid[..., None, None]
    zero = torch.zeros((), dtype=kp.dtype, device=kp.device)
    ox = torch.where(mask, dx[..., None, :] / locref_std, zero)
    oy = torch.where(mask, dy[..., :, None] / locref_std, zero)
    b, k = valid.shape
    offsets = torch.stack([ox, oy], dim=2).reshape(b, 2 * k, hh, wh)
    return offsets, mask.to(kp.dtype)


def decode_with_offsets(heatmaps: torch.Tensor, offsets: torch.Tensor, stride: int,
                        locref_std: float = DLC_LOCREF_STD, *, logits: bool = False,
                        confidence: str | None = None, sigma: float = 1.25) -> tuple[torch.Tensor, torch.Tensor]:
    """DLC decoding: argmax pixel centre + its (dx, dy) offset * locref_std, in input pixels.

    ``offsets`` is (B, 2K, Hh, Wh) laid out as by ``encode_offsets``; ``logits``,
    ``confidence`` and ``sigma`` are as in ``decode_heatmaps``.
    """
    heatmaps = _check_maps(heatmaps)
    stride = _check_stride(stride)
    confidence = _pick_confidence(confidence, logits)
    b, k, h, w = heatmaps.shape
    if tuple(_check_maps(offsets, "offsets").shape) != (b, 2 * k, h, w):
        raise DataError.at("offsets", "offset maps must have shape (batch, 2*keypoints, H, W) "
                           f"= {(b, 2 * k, h, w)}", got=tuple(offsets.shape),
                           fix="use the head's location-refinement output")
    maps = heatmaps.detach()
    rows, cols = _argmax(maps)
    lin = (rows * w + cols)[..., None, None].expand(b, k, 2, 1)
    off = offsets.detach().reshape(b, k, 2, h * w).gather(-1, lin)[..., 0]  # (B, K, 2)
    centre = to_input_coords(torch.stack([cols, rows], dim=-1).to(off.dtype), stride)
    xy = (centre + off * locref_std).to(heatmaps.dtype)
    return xy, _confidence(maps, logits, confidence, rows, cols, sigma)


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                 kind: str = "mse") -> torch.Tensor:
    """Mean heatmap loss over the keypoints where ``valid`` (B, K) is True.

    ``mse``: mean over pixels of (pred - target)^2, pred used as maps. ``kl``/``js``: pred
    are logits, softmaxed over each map's pixels; target is divided by its sum (so
    peak-normalised targets work too); ``kl`` = KL(target || softmax(pred)) and ``js`` the
    Jensen-Shannon divergence, natural log, summed over pixels. Per-keypoint values are
    averaged over valid keypoints; none valid gives 0, still attached to ``pred``.
    Lightning Pose's ``heatmap_loss_type``.
    """
    kind = _choice("heatmap_loss_type", kind, _LOSSES)
    pred = _check_maps(pred, "pred")
    if tuple(target.shape) != tuple(pred.shape) or tuple(valid.shape) != tuple(pred.shape[:2]):
        raise DataError.at("heatmap_loss", "pred and target must have the same (B, K, H, W) "
                           "shape and valid must be (B, K)",
                           got=(tuple(pred.shape), tuple(target.shape), tuple(valid.shape)),
                           fix="pass the validity mask returned by make_heatmaps")
    valid = valid.to(torch.bool)
    target = target.to(pred.dtype)
    if kind == "mse":
        per_kp = ((pred - target) ** 2).mean(dim=(-2, -1))
    else:
        log_q = torch.log_softmax(pred.flatten(-2), dim=-1)
        p = target.flatten(-2).clamp_min(0)
        p = p / p.sum(dim=-1, keepdim=True).clamp_min(_TINY)
        if kind == "kl":
            per_kp = (torch.xlogy(p, p) - p * log_q).sum(dim=-1)
        else:
            q = log_q.exp()  # log_m stays finite where p == 0 because log_q is finite
            log_m = torch.logaddexp(torch.log(p), log_q) - math.log(2)
            per_kp = 0.5 * ((torch.xlogy(p, p) - p * log_m).sum(dim=-1)
                            + (q * (log_q - log_m)).sum(dim=-1))
    per_kp = torch.where(valid, per_kp, torch.zeros_like(per_kp))
    return per_kp.sum() / valid.sum().clamp_min(1)


def soft_argmax(heatmaps: torch.Tensor, stride: int, *, logits: bool = False,
                temperature: float = 1000.0) -> torch.Tensor:
    """Differentiable keypoints (B, K, 2) in input pixels: the expectation of the spatial softmax.

    For peak-normalised (mse) maps the scores are ``heatmaps * temperature`` (Lightning Pose's
    spatial softmax with temperature 1000, nearly the argmax but with gradients); ``logits=True``
    (kl/js models) softmaxes the raw scores. Used by the unsupervised losses on unlabeled frames.
    """
    heatmaps = _check_maps(heatmaps)
    stride = _check_stride(stride)
    scores = heatmaps.float() if logits else heatmaps.float() * float(temperature)
    h, w = heatmaps.shape[-2:]
    prob = torch.softmax(scores.flatten(-2), dim=-1).reshape(scores.shape)
    ys = torch.arange(h, dtype=prob.dtype, device=prob.device)
    xs = torch.arange(w, dtype=prob.dtype, device=prob.device)
    x = (prob.sum(dim=-2) * xs).sum(dim=-1)
    y = (prob.sum(dim=-1) * ys).sum(dim=-1)
    return to_input_coords(torch.stack([x, y], dim=-1), stride)
