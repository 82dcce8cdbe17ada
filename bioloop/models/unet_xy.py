"""The Allen Cell Segmenter 3D U-Nets ``unet_xy`` and ``unet_xy_zoom`` (aicsmlsegment).

Both use VALID 3x3x3 convolutions (no padding) and pool only in y, x, so the output is smaller
than the input. Layout (b = ``base_channels``, Allen: 32): four encoder blocks
(conv -> norm -> ReLU -> conv(2x width) -> norm -> ReLU) giving 2b, 4b, 8b, 16b channels with
(1, 2, 2) max-pooling between them; three decoder levels (transposed conv (1, 2, 2), concatenate
the centre-cropped skip, two convs) back to 2b channels; a 1x1x1 conv to logits. Two auxiliary
heads (transposed conv from the two deeper decoder levels, a 3x3x3 conv, a 1x1x1 conv) are
centre-cropped to the main output. ``unet_xy_zoom`` first max-pools y, x by ``zoom_ratio`` and
ends with a (1, k, k) transposed conv plus one more decoder block. Module names and layer order
follow aicsmlsegment (norm="batch" is its BatchNorm3d(affine=False)), so its weights load.

Size mapping (per axis, measured, equal to Allen's): unet_xy: z_out = z_in - 28,
y_in = 60 + 8t -> y_out = 8t - 28 (t >= 4), e.g. (48, 148, 148) -> (20, 60, 60).
unet_xy_zoom(k): z_out = z_in - 32, y_in = k(60 + 8t) -> y_out = k(8t - 28) - 4,
e.g. k=3: (52, 420, 420) -> (20, 152, 152).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bioloop.models.unet import _check_int

_MAX_SEARCH = 100_000


def _norm3d(kind: str | None, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm3d(channels, affine=False)]
    if kind == "instance":
        return [nn.InstanceNorm3d(channels, affine=False)]
    return []


def _block(cin: int, mid: int, cout: int, norm: str | None) -> nn.Sequential:
    """Two valid 3x3x3 convolutions (Allen's ``encoder``/``decoder``)."""
    return nn.Sequential(nn.Conv3d(cin, mid, 3), *_norm3d(norm, mid), nn.ReLU(),
                         nn.Conv3d(mid, cout, 3), *_norm3d(norm, cout), nn.ReLU())


def _tconv(cin: int, cout: int, kernel: int, stride: int) -> nn.ConvTranspose3d:
    return nn.ConvTranspose3d(cin, cout, (1, kernel, kernel), stride=(1, stride, stride))


def _crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Centre-crop the spatial axes of ``x`` to ``shape``."""
    starts = [(s - t) // 2 for s, t in zip(x.shape[2:], shape)]
    return x[(..., *(slice(a, a + t) for a, t in zip(starts, shape)))]


def _axis_out(n: int, xy: bool, zoom: int | None) -> int | None:
    """Output length of one axis for input length ``n``; None when ``n`` does not fit."""
    if xy and zoom:
        if n % zoom:
            return None
        n //= zoom
    skips = []
    for level in range(4):  # encoder: two valid convs, then a y/x pool except at the bottom
        n -= 4
        if n < 1:
            return None
        if level < 3:
            skips.append(n)
            if xy:
                if n % 2:
                    return None
                n //= 2
    for skip in reversed(skips):  # decoder: upsample, crop the skip, two valid convs
        n = 2 * n if xy else n
        if skip < n or (skip - n) % 2:
            return None
        n -= 4
        if n < 1:
            return None
    if zoom:
        n = (n * zoom if xy else n) - 4
        if n < 1:
            return None
    return n


class UNetXY(nn.Module):
    """Allen Cell Segmenter ``unet_xy``: a valid-convolution 3D U-Net pooling only y and x.

    Training mode returns ``[main, aux1, aux2]`` (all (B, out_channels, *output_shape));
    eval mode returns ``main``. Args: in_channels; out_channels (Allen: 2); base_channels
    (Allen: 32); norm "batch" (default), "instance" or None; size_in / size_out: an optional
    (z, y, x) pair as in Allen's config, checked at construction (ValueError naming the
    nearest valid sizes); the model itself works for any valid size.
    """

    name = "unet_xy"
    dims = 3

    def __init__(self, in_channels: int = 1, out_channels: int = 2, *, base_channels: int = 32,
                 norm: str | None = "batch", size_in: Sequence[int] | None = None,
                 size_out: Sequence[int] | None = None):
        super().__init__()
        self._build(in_channels, out_channels, base_channels, norm, None)
        self._check_config_sizes(size_in, size_out)

    def _build(self, in_channels, out_channels, base_channels, norm, zoom) -> None:
        _check_int("in_channels", in_channels, 1)
        _check_int("out_channels", out_channels, 1)
        _check_int("base_channels", base_channels, 1)
        if norm not in ("batch", "instance", None):
            raise ValueError(f"norm must be 'batch', 'instance' or None (got {norm!r})")
        self.in_channels, self.out_channels, self.zoom = in_channels, out_channels, zoom
        b, c, k = base_channels, out_channels, zoom or 1
        self.ec1 = _block(in_channels, b, 2 * b, norm)
        self.ec2 = _block(2 * b, 2 * b, 4 * b, norm)
        self.ec3 = _block(4 * b, 4 * b, 8 * b, norm)
        self.ec4 = _block(8 * b, 8 * b, 16 * b, norm)
        self.up3, self.up2, self.up1 = _tconv(16 * b, 16 * b, 2, 2), _tconv(8 * b, 8 * b, 2, 2), \
            _tconv(4 * b, 4 * b, 2, 2)
        self.dc3 = _block(8 * b + 16 * b, 8 * b, 8 * b, norm)
        self.dc2 = _block(4 * b + 8 * b, 4 * b, 4 * b, norm)
        self.dc1 = _block(2 * b + 4 * b, 2 * b, 2 * b, norm)
        if zoom:
            self.up0 = _tconv(2 * b, 2 * b, k, k)
            self.dc0 = _block(2 * b, 2 * b, 2 * b, norm)
            self.predict0 = nn.Conv3d(2 * b, c, 1)
            self.up2a, self.up1a = _tconv(8 * b, c, 4 * k, 4 * k), _tconv(4 * b, c, 2 * k, 2 * k)
        else:
            self.dc0 = nn.Conv3d(2 * b, c, 1)
            self.up2a, self.up1a = _tconv(8 * b, c, 8, 4), _tconv(4 * b, c, 4, 2)
        self.conv2a, self.conv1a = nn.Conv3d(c, c, 3), nn.Conv3d(c, c, 3)
        self.predict2a, self.predict1a = nn.Conv3d(c, c, 1), nn.Conv3d(c, c, 1)

    def _check_config_sizes(self, size_in, size_out) -> None:
        if size_out is not None and size_in is None:
            raise ValueError(f"size_out needs size_in (got size_out={size_out!r})")
        if size_in is not None:
            self.output_shape(size_in)
            if size_out is not None:
                check_sizes(self, _as_shape(size_in, "size_in"), _as_shape(size_out, "size_out"))

    @property
    def label(self) -> str:
        return self.name + (f" (zoom_ratio={self.zoom})" if self.zoom else "")

    def axis_output(self, n: int, axis: int) -> int | None:
        """Output length of spatial ``axis`` (0 = z) for input length ``n``; None if invalid."""
        return _axis_out(n, axis > 0, self.zoom)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial (z, y, x) output shape for ``input_shape``; ValueError if it does not fit."""
        shape = _as_shape(input_shape, "size_in")
        out = tuple(self.axis_output(n, i) for i, n in enumerate(shape))
        if any(o is None for o in out):
            raise ValueError(_invalid_message(self, shape))
        return out  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.name} expects a (B, C, D, H, W) input with "
                             f"C={self.in_channels} (got shape {tuple(x.shape)})")
        self.output_shape(tuple(x.shape[2:]))
        if self.zoom:
            x = F.max_pool3d(x, (1, self.zoom, self.zoom))
        d1 = self.ec1(x)
        d2 = self.ec2(F.max_pool3d(d1, (1, 2, 2)))
        d3 = self.ec3(F.max_pool3d(d2, (1, 2, 2)))
        u3 = self.ec4(F.max_pool3d(d3, (1, 2, 2)))
        u2 = self.dc3(self._cat(self.up3(u3), d3))
        u1 = self.dc2(self._cat(self.up2(u2), d2))
        u0 = self.dc1(self._cat(self.up1(u1), d1))
        main = self.predict0(self.dc0(self.up0(u0))) if self.zoom else self.dc0(u0)
        if not self.training:
            return main
        size = main.shape[2:]
        aux1 = _crop(self.predict1a(self.conv1a(self.up1a(u1))), size)
        aux2 = _crop(self.predict2a(self.conv2a(self.up2a(u2))), size)
        return [main, aux1, aux2]

    @staticmethod
    def _cat(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([up, _crop(skip, up.shape[2:])], dim=1)


class UNetXYZoom(UNetXY):
    """Allen ``unet_xy_zoom``: ``unet_xy`` run on y, x max-pooled by ``zoom_ratio`` (for large
    structures; Allen: zoom ≈ object diameter in voxels / 150), upsampled back at the end."""

    name = "unet_xy_zoom"

    def __init__(self, in_channels: int = 1, out_channels: int = 2, *, zoom_ratio: int = 3,
                 base_channels: int = 32, norm: str | None = "batch",
                 size_in: Sequence[int] | None = None, size_out: Sequence[int] | None = None):
        nn.Module.__init__(self)
        _check_int("zoom_ratio", zoom_ratio, 1)
        self._build(in_channels, out_channels, base_channels, norm, zoom_ratio)
        self._check_config_sizes(size_in, size_out)


def _as_shape(shape, what: str) -> tuple[int, ...]:
    try:
        if isinstance(shape, str) or len(shape) != 3 or any(isinstance(s, bool) for s in shape):
            raise TypeError
        return tuple(operator.index(s) for s in shape)
    except TypeError:
        raise ValueError(f"{what} must be three integers (z, y, x) (got {shape!r})") from None


def _make(model, zoom_ratio: int | None) -> UNetXY | None:
    if isinstance(model, UNetXY):
        return model
    if model == "unet_xy":
        return _Geometry(None)  # type: ignore[return-value]
    if model == "unet_xy_zoom":
        return _Geometry(3 if zoom_ratio is None else zoom_ratio)  # type: ignore[return-value]
    return None


class _Geometry:
    """The size arithmetic of a UNetXY without building its layers."""

    axis_output = UNetXY.axis_output
    output_shape = UNetXY.output_shape
    label = UNetXY.label

    def __init__(self, zoom: int | None):
        self.zoom = zoom
        self.name = "unet_xy_zoom" if zoom else "unet_xy"


def _valid(model, axis: int, n: int) -> bool:
    if n < 1:
        return False
    if hasattr(model, "axis_output"):
        return model.axis_output(n, axis) is not None
    return n % getattr(model, "size_multiple", 1) == 0


def _step(model, axis: int, n: int, j: int, direction: int) -> int | None:
    """The ``j``-th valid length from ``n`` (inclusive) going ``direction`` (+1/-1)."""
    found = -1
    for m in range(n, 0 if direction < 0 else n + _MAX_SEARCH, direction):
        if _valid(model, axis, m):
            found += 1
            if found == j:
                return m
    return None


def valid_sizes(model, near: Sequence[int], n: int = 3, *,
                zoom_ratio: int | None = None) -> list[tuple[int, ...]]:
    """Up to ``n`` valid input sizes nearest to ``near`` (closest first, by summed distance).

    ``model`` is a UNetXY/UNetXYZoom, the name "unet_xy" / "unet_xy_zoom" (``zoom_ratio``,
    default 3), or any model with a ``size_multiple`` (sizes are multiples of it; a model
    without one accepts every size). Invalid axes are rounded down and up, valid ones kept; for a
    valid ``near`` it comes first, followed by its neighbours on the axes with coarse steps.
    """
    geometry = _make(model, zoom_ratio)
    if geometry is None and not isinstance(model, nn.Module):
        raise ValueError(f"valid_sizes: unknown model {model!r}; pass a model or "
                         f"'unet_xy' / 'unet_xy_zoom'")
    geometry = geometry or model
    near = tuple(int(s) for s in near)
    bad = [i for i, s in enumerate(near) if not _valid(geometry, i, s)]
    coarse = [i for i, s in enumerate(near)  # axes where not every length is valid
              if not (_valid(geometry, i, s - 1) and _valid(geometry, i, s + 1))]
    moving = bad or coarse or list(range(len(near)))
    first = 0 if bad else 1
    found: list[tuple[int, ...]] = [] if bad else [near]
    for j in range(first, first + n):
        for direction in (-1, 1):
            size = list(near)
            for i in moving:
                v = _step(geometry, i, near[i], j, direction)
                size[i] = v if v is not None else _step(geometry, i, 1, 0, 1)
            if None not in size and tuple(size) not in found:
                found.append(tuple(size))  # type: ignore[arg-type]
    found.sort(key=lambda s: sum(abs(a - b) for a, b in zip(s, near)))
    return found[:n]


def _invalid_message(model, size_in: tuple[int, ...]) -> str:
    options = valid_sizes(model, size_in, 2)
    listed = " and ".join(f"{s} giving size_out {model.output_shape(s)}" for s in options)
    rules = "; ".join(
        f"valid {axis} are " + ", ".join(str(_step(model, i, 1, j, 1)) for j in range(3)) + ", ..."
        for i, axis in ((0, "z"), (1, "y/x")))
    plural = "sizes are" if len(options) > 1 else "size is"
    return (f"size_in {size_in} is not valid for {model.label}: nearest valid {plural} {listed} "
            f"({rules})")


def check_sizes(model, size_in: Sequence[int], size_out: Sequence[int]) -> None:
    """Raise ValueError unless ``model`` maps ``size_in`` to ``size_out`` (spatial shapes).

    Models without ``output_shape`` keep the size. Messages name the nearest valid sizes.
    """
    size_in, size_out = tuple(size_in), tuple(size_out)
    name = getattr(model, "label", type(model).__name__)
    if not hasattr(model, "output_shape"):
        if size_in != size_out:
            raise ValueError(f"size_out {size_out} does not match size_in {size_in} for {name}, "
                             f"whose output has its input's size; set size_out = {size_in}")
        return
    expected = tuple(model.output_shape(size_in))
    if expected == size_out:
        return
    text = (f"size_out {size_out} does not match size_in {size_in} for {name}: that size_in "
            f"gives size_out {expected}; set size_out = {expected}")
    match = _input_for_output(model, size_out)
    if match is not None:
        text += f", or size_in = {match} for size_out {size_out}"
    raise ValueError(text)


def _input_for_output(model, size_out: tuple[int, ...]) -> tuple[int, ...] | None:
    """The input size giving exactly ``size_out``, if any (outputs grow with inputs)."""
    if not hasattr(model, "axis_output") or len(size_out) != 3:
        return None
    result = []
    for axis, want in enumerate(size_out):
        n = _step(model, axis, 1, 0, 1)
        while n is not None and model.axis_output(n, axis) < want:
            n = _step(model, axis, n + 1, 0, 1)
        if n is None or model.axis_output(n, axis) != want:
            return None
        result.append(n)
    return tuple(result)
