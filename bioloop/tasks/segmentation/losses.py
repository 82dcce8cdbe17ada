"""Segmentation losses that ignore unannotated voxels.

Targets are float tensors shaped like the logits, (B, C, *spatial); NaN marks a voxel whose
class was not annotated. Every loss here averages over valid (non-NaN) elements only; a batch
with no valid element gives 0, still attached to the logits so ``backward()`` works.

Every built-in loss is called as ``loss(output, target, weight=None)``:
- ``weight`` is an optional per-voxel weight (B, 1, *spatial), e.g. an Allen cost map; the
  mean becomes sum(w * loss) / sum(w) over valid voxels (non-finite weights count as 0).
- ``output`` may be the logits tensor or a list/tuple ``[main, aux1, ...]`` from a model in
  training mode: every loss except ``AuxLoss`` then scores the main output (element 0) only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bioloop.config.structure import did_you_mean as _did_you_mean
from bioloop.errors import ConfigError, DataError

__all__ = ["AuxLoss", "BCEDiceLoss", "DiceLoss", "MaskedLoss", "SoftmaxCrossEntropyLoss",
           "activation_for", "balanced_class_weights", "build_criterion", "main_output",
           "masked_mean"]

_PER_CLASS_KWARGS = ("pos_weight", "weight")
_MAX_RATIO = 10.0  # "balanced": the rarest class weighs at most this many times the commonest
_IGNORE = -100

ClassWeights = Sequence[float] | torch.Tensor | str | None


def _class_view(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) so it broadcasts over a (B, C, *spatial) tensor of ``ndim`` dims."""
    return values.reshape(1, -1, *([1] * (ndim - 2)))


def _weights_tensor(class_weights: ClassWeights) -> torch.Tensor | None:
    if class_weights is None or (isinstance(class_weights, str) and class_weights == "balanced"):
        return None
    w = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    if w.numel() == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"class weights must be finite, >= 0 and not all 0 "
                         f"(got {w.tolist()})")
    return w



def masked_mean(loss: torch.Tensor, valid: torch.Tensor,
                class_weights: torch.Tensor | None = None,
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """sum(w * loss) / sum(w) over valid elements, w = class weight x per-voxel ``weight``
    (broadcast over channels); a connected 0 when the weights sum to 0."""
    w = valid.float()
    if class_weights is not None:
        w = w * _class_view(class_weights.to(loss.device), loss.ndim)
    if weight is not None:
        w = w * weight.to(loss.device, torch.float32)
    loss = torch.where(w > 0, loss.float(), 0.0)
    denom = w.sum()
    # A denominator of 1 when nothing is valid: the numerator is then exactly 0 (with grad_fn).
    return (loss * w).sum() / torch.where(denom > 0, denom, torch.ones_like(denom))


def main_output(output, where: str = "criterion") -> torch.Tensor:
    """The main logits: ``output`` itself, or element 0 of a list/tuple ``[main, aux1, ...]``."""
    if isinstance(output, (list, tuple)):
        if not output:
            raise ConfigError.at(where, "the model returned an empty list of outputs", got=[],
                                 fix="return the logits tensor, or [main, aux1, ...]")
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ConfigError.at(where, "the model output must be a tensor of logits",
                             got=type(output).__name__, fix="return a (B, C, *spatial) tensor")
    return output


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, where: str) -> None:
    if logits.shape != target.shape:
        raise ConfigError.at(
            where, "model output and target differ in shape",
            got=f"{tuple(logits.shape)} vs {tuple(target.shape)}",
            fix="make the model's out_channels equal the number of classes")


def _check_weight(weight, target: torch.Tensor, where: str) -> torch.Tensor | None:
    """The per-voxel weight as float (B, 1, *spatial), non-finite values set to 0."""
    if weight is None:
        return None
    shape = tuple(getattr(weight, "shape", ()))
    if (not isinstance(weight, torch.Tensor) or len(shape) != target.ndim
            or shape[0] != target.shape[0] or shape[1] != 1 or shape[2:] != target.shape[2:]):
        raise DataError.at(
            where, "the per-voxel loss weight (cost map) must be shaped (B, 1, *spatial) "
            "like the target", got=f"{shape or type(weight).__name__} for target "
            f"{tuple(target.shape)}", fix="give one weight per output voxel")
    w = weight.to(target.device, torch.float32)
    return torch.where(torch.isfinite(w), w, 0.0)


def _check_class_count(class_weights: torch.Tensor | None, channels: int, where: str) -> None:
    if class_weights is not None and class_weights.numel() != channels:
        raise ConfigError.at(where, "weight_loss needs one weight per class",
                             got=class_weights.tolist(), fix=f"give {channels} numbers")


def _class_index(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax class (B, *S), valid (B, *S)): a voxel is invalid if any channel is NaN or all
    channels are 0."""
    nan = torch.isnan(target)
    filled = torch.where(nan, 0.0, target.float())
    valid = ~nan.any(1) & (filled != 0).any(1)
    return filled.argmax(1), valid


@torch.no_grad()
def balanced_class_weights(target: torch.Tensor, *, exclusive: bool = False,
                           max_ratio: float = _MAX_RATIO) -> torch.Tensor:
    """Per-class inverse-frequency weights (C,) of one batch, mean 1 over annotated classes.

    The frequency of class c is (positive voxels of c) / (valid voxels of c): with
    ``exclusive`` (softmax) a voxel is positive for its argmax class and valid as in
    ``SoftmaxCrossEntropyLoss``; otherwise target values are summed over non-NaN voxels.
    Frequencies are raised to at least max_frequency / ``max_ratio``, so no class weighs more
    than ``max_ratio`` times another (a class with no positive gets exactly that). Classes
    without valid voxels get 1. The result is a constant (no gradient).
    """
    channels = target.shape[1]
    if exclusive:
        idx, valid = _class_index(target)
        pos = torch.bincount(idx[valid].flatten(), minlength=channels).float()
        count = valid.sum().float().expand(channels)
    else:
        valid = ~torch.isnan(target)
        dims = [d for d in range(target.ndim) if d != 1]
        pos = torch.where(valid, target.float(), 0.0).sum(dims)
        count = valid.sum(dims).float()
    seen = count > 0
    freq = pos / count.clamp_min(1)
    top = freq[seen].max() if seen.any() else freq.new_zeros(())
    if top <= 0:
        return torch.ones(channels, device=target.device)
    w = 1.0 / freq.clamp_min(top / max_ratio)
    w = w / w[seen].mean()
    return torch.where(seen, w, 1.0)


class _ClassWeighted(nn.Module):
    """Holds fixed per-class weights (a buffer) or computes "balanced" ones per batch."""

    def __init__(self, class_weights: ClassWeights):
        super().__init__()
        self.balanced = isinstance(class_weights, str) and class_weights == "balanced"
        self.register_buffer("class_weights", _weights_tensor(class_weights))

    def _batch_class_weights(self, target: torch.Tensor, exclusive: bool = False):
        if self.balanced:
            return balanced_class_weights(target, exclusive=exclusive)
        return self.class_weights


class MaskedLoss(_ClassWeighted):
    """Average an elementwise ``criterion(logits, target)`` over non-NaN target elements.

    ``criterion`` must return a loss shaped like ``logits`` (reduction "none"). NaN targets
    are replaced by 0 before the call and excluded afterwards. With ``class_weights`` (one
    per channel, or "balanced") the result is sum(w_c * loss) / sum(w_c) over valid elements.
    """

    activation = "sigmoid"

    def __init__(self, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 class_weights: ClassWeights = None, *, where: str = "criterion"):
        super().__init__(class_weights)
        self.criterion = criterion
        self.where = where

    def forward(self, output, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        logits = main_output(output, self.where)
        _check_shapes(logits, target, self.where)
        if not target.is_floating_point():
            target = target.float()
        weight = _check_weight(weight, target, self.where)
        valid = ~torch.isnan(target)
        _check_class_count(self.class_weights, logits.shape[1], self.where)
        self._fit_per_class_tensors(logits)
        loss = self.criterion(logits, torch.where(valid, target, 0.0))
        if loss.shape != logits.shape:
            raise ConfigError.at(
                self.where, "criterion must return an elementwise loss shaped like the logits",
                got=f"{tuple(loss.shape)} for logits {tuple(logits.shape)}",
                fix="use an elementwise loss such as BCEWithLogitsLoss or MSELoss; for a "
                    "softmax over mutually exclusive classes use criterion = 'cross_entropy'")
        return masked_mean(loss, valid, self._batch_class_weights(target), weight)

    def _fit_per_class_tensors(self, logits: torch.Tensor) -> None:
        """Reshape per-class ``pos_weight``/``weight`` of length C to (C, 1, ...) for ``logits``."""
        channels, ndim = logits.shape[1], logits.ndim
        for name in _PER_CLASS_KWARGS:
            t = getattr(self.criterion, name, None)
            if not isinstance(t, torch.Tensor):
                continue
            want = t.shape
            if t.ndim >= 1 and t.numel() == channels:
                want = torch.Size((channels, *([1] * (ndim - 2))))
            if t.shape != want or t.device != logits.device:
                setattr(self.criterion, name, t.reshape(want).to(logits.device))


class DiceLoss(_ClassWeighted):
    """Soft Dice on sigmoid probabilities: mean over classes of 1 - dice_c.

    Per class, over the batch and valid voxels (each voxel weighted by ``weight`` if given):
    dice_c = (2 sum(w p t) + smooth) / (sum(w p) + sum(w t) + smooth). Classes without any
    valid voxel of weight > 0 are left out of the mean.
    """

    activation = "sigmoid"

    def __init__(self, smooth: float = 1.0, class_weights: ClassWeights = None, *,
                 where: str = "dice loss"):
        super().__init__(class_weights)
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or smooth < 0:
            raise ValueError(f"smooth must be a number >= 0 (got {smooth!r})")
        self.smooth = float(smooth)
        self.where = where

    def forward(self, output, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        logits = main_output(output, self.where)
        _check_shapes(logits, target, self.where)
        weight = _check_weight(weight, target, self.where)
        valid = ~torch.isnan(target)
        w = valid.float() if weight is None else valid * weight
        prob = torch.where(valid, torch.sigmoid(logits.float()), 0.0) * w
        truth = torch.where(valid, target.float(), 0.0) * w
        dims = [d for d in range(logits.ndim) if d != 1]
        inter = (prob * torch.where(valid, target.float(), 0.0)).sum(dims)
        denom = prob.sum(dims) + truth.sum(dims) + self.smooth
        dice = torch.where(denom > 0, (2 * inter + self.smooth) / denom.clamp_min(1e-12), 1.0)
        present = (w > 0).transpose(0, 1).reshape(w.shape[1], -1).any(1).float()
        class_weights = self._batch_class_weights(target)
        if class_weights is not None:
            _check_class_count(class_weights, logits.shape[1], self.where)
            present = present * class_weights.to(present.device)
        n = present.sum()
        return ((1 - dice) * present).sum() / torch.where(n > 0, n, torch.ones_like(n))


class BCEDiceLoss(nn.Module):
    """``bce_weight`` * masked BCE-with-logits + ``dice_weight`` * DiceLoss (both 1 by default)."""

    activation = "sigmoid"

    def __init__(self, pos_weight: torch.Tensor | Sequence[float] | None = None,
                 class_weights: ClassWeights = None, smooth: float = 1.0,
                 bce_weight: float = 1.0, dice_weight: float = 1.0, *,
                 where: str = "criterion"):
        super().__init__()
        self.bce = _masked_bce(pos_weight, class_weights, where=where)
        self.dice = DiceLoss(smooth, class_weights, where=where)
        self.bce_weight, self.dice_weight = float(bce_weight), float(dice_weight)

    def forward(self, output, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        return (self.bce_weight * self.bce(output, target, weight)
                + self.dice_weight * self.dice(output, target, weight))


def _masked_bce(pos_weight: torch.Tensor | Sequence[float] | None = None,
                class_weights: ClassWeights = None, *, where: str = "criterion") -> MaskedLoss:
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32)
    return MaskedLoss(nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight),
                      class_weights, where=where)


class SoftmaxCrossEntropyLoss(_ClassWeighted):
    """Softmax cross-entropy over mutually exclusive classes; models trained with it use a
    softmax activation (``activation_for`` gives "softmax").

    The target is one-hot with NaN (B, C, *S): each voxel's class is the argmax of its
    channels; voxels where any channel is NaN or all channels are 0 are ignored. With class
    weights (a list or "balanced") the mean is weighted like torch's ``cross_entropy``:
    sum(w[y] * cost * loss) / sum(w[y] * cost) over valid voxels, cost being the per-voxel
    ``weight`` (1 if not given). ``label_smoothing`` is torch's.
    """

    activation = "softmax"

    def __init__(self, class_weights: ClassWeights = None, label_smoothing: float = 0.0,
                 ignore_index: None = None, *, where: str = "criterion"):
        super().__init__(class_weights)
        if (isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float))
                or not 0 <= label_smoothing < 1):
            raise ValueError(f"label_smoothing must be a number in [0, 1) "
                             f"(got {label_smoothing!r})")
        if ignore_index is not None:
            raise ConfigError.at(where, "criterion_kwargs['ignore_index'] is not used",
                                 got=ignore_index, fix="remove it: voxels whose target is NaN "
                                 "or all 0 are ignored (write NaN in the labels to ignore them)")
        self.label_smoothing = float(label_smoothing)
        self.where = where

    def forward(self, output, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        logits = main_output(output, self.where).float()
        _check_shapes(logits, target, self.where)
        channels = logits.shape[1]
        if channels < 2:
            raise ConfigError.at(self.where, _TWO_CLASSES, got=channels, fix=_TWO_CLASSES_FIX)
        weight = _check_weight(weight, target, self.where)
        idx, valid = _class_index(target)
        class_weights = self._batch_class_weights(target, exclusive=True)
        _check_class_count(class_weights, channels, self.where)
        if class_weights is not None:
            class_weights = class_weights.to(logits.device)
        loss = F.cross_entropy(logits, torch.where(valid, idx, _IGNORE), weight=class_weights,
                               ignore_index=_IGNORE, reduction="none",
                               label_smoothing=self.label_smoothing)
        w = valid.float() if class_weights is None else valid * class_weights[idx]
        if weight is not None:
            cost = weight[:, 0]
            w, loss = w * cost, torch.where(cost > 0, loss, 0.0) * cost
        denom = w.sum()
        return loss.sum() / torch.where(denom > 0, denom, torch.ones_like(denom))


_TWO_CLASSES = "a softmax criterion needs at least 2 mutually exclusive classes"
_TWO_CLASSES_FIX = ("list the background as a class too (e.g. classes = ['background', "
                    "'cell']), or use a sigmoid criterion such as the default")
_BASES = {"bce": _masked_bce, "cross_entropy": SoftmaxCrossEntropyLoss, "dice": DiceLoss,
          "bce_dice": BCEDiceLoss}


class AuxLoss(nn.Module):
    """Allen Cell Segmenter auxiliary loss: sum_i loss_weight[i] * base(output_i, target, weight).

    ``output`` is the list ``[main, aux1, aux2]`` of a model in training mode (one weight per
    output), or a single tensor, which is scored by the base loss alone (eval mode). ``base``
    is one of "bce", "cross_entropy" (Allen's choice, the default), "dice", "bce_dice";
    other keyword arguments go to it.
    """

    def __init__(self, loss_weight: Sequence[float] = (1.0, 1.0, 1.0),
                 base: str = "cross_entropy", class_weights: ClassWeights = None, *,
                 where: str = "criterion", **base_kwargs):
        super().__init__()
        self.where = where
        self.loss_weight = _loss_weights(loss_weight, where)
        if not isinstance(base, str) or base not in _BASES:
            raise ConfigError.at(where, "criterion_kwargs['base'] of criterion 'aux' is unknown",
                                 got=base, fix="use one of " + ", ".join(map(repr, _BASES))
                                 + _did_you_mean(str(base), _BASES))
        make = _BASES[base]
        accepted = [a for a in _init_params(make)[0] if a not in ("class_weights", "where")]
        bad = [k for k in base_kwargs if k not in accepted]
        if bad:
            shown = ["loss_weight", "base", "weight_loss", *accepted]
            listed = ", ".join(f"{k!r}{_did_you_mean(str(k), shown)}" for k in bad)
            raise ConfigError.at(where, f"criterion_kwargs has unknown key(s) for aux with base "
                                 f"{base!r}: {listed}", got=sorted(map(str, base_kwargs)),
                                 fix="accepted keys are " + ", ".join(map(repr, shown)))
        self.base_name = base
        self.base = make(**base_kwargs, class_weights=class_weights, where=where)

    @property
    def activation(self) -> str:
        return self.base.activation

    def forward(self, output, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return self.base(output, target, weight)
        outputs = list(output)
        if len(outputs) != len(self.loss_weight):
            raise ConfigError.at(
                self.where, f"the model returns {len(outputs)} output(s) but criterion_kwargs"
                f"['loss_weight'] has {len(self.loss_weight)} weight(s)",
                got=list(self.loss_weight),
                fix=f"give {len(outputs)} weights, one per output (main first)")
        total = None
        for factor, out in zip(self.loss_weight, outputs):
            part = factor * self.base(out, target, weight)
            total = part if total is None else total + part
        return total


def _loss_weights(value, where: str) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf")
        for v in value)
    if not ok:
        raise ConfigError.at(where, "criterion_kwargs['loss_weight'] must be a list of numbers "
                             ">= 0, one per model output (main first)", got=value,
                             fix="e.g. loss_weight = [1, 1, 1]")
    return tuple(float(v) for v in value)


# ---------------------------------------------------------------- shared with ``criterion``


def _init_params(cls) -> tuple[list[str], bool]:
    """(keyword names of cls.__init__ (or of a function), whether it takes **kwargs)."""
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


_FROM_CRITERION = ("activation_for", "build_criterion")


def __getattr__(name: str):
    """``build_criterion``/``activation_for`` live in ``criterion`` (which imports this module)."""
    if name in _FROM_CRITERION:
        from bioloop.tasks.segmentation import criterion

        return getattr(criterion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
