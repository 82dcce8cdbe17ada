"""Segmentation losses that ignore unannotated voxels.

Targets are float tensors shaped like the logits, (B, C, *spatial); NaN marks a voxel whose
class was not annotated. Every loss here averages over valid (non-NaN) elements only; a batch
with no valid element gives 0, still attached to the logits so ``backward()`` works.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from bioloop.config.structure import did_you_mean as _did_you_mean
from bioloop.errors import ConfigError

__all__ = ["BCEDiceLoss", "DiceLoss", "MaskedLoss", "build_criterion", "masked_mean"]

_PER_CLASS_KWARGS = ("pos_weight", "weight")
_BUILTIN_NAMES = ("dice", "bce_dice")


def _class_view(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) so it broadcasts over a (B, C, *spatial) tensor of ``ndim`` dims."""
    return values.reshape(1, -1, *([1] * (ndim - 2)))


def _weights_tensor(class_weights: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    if class_weights is None:
        return None
    w = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    if w.numel() == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"class weights must be finite, >= 0 and not all 0 "
                         f"(got {w.tolist()})")
    return w


def masked_mean(loss: torch.Tensor, valid: torch.Tensor,
                class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum(w * loss over valid) / sum(w over valid), or a connected 0 when nothing is valid."""
    loss = torch.where(valid, loss.float(), 0.0)
    w = valid.float()
    if class_weights is not None:
        w = w * _class_view(class_weights.to(loss.device), loss.ndim)
    denom = w.sum()
    # A denominator of 1 when nothing is valid: the numerator is then exactly 0 (with grad_fn).
    return (loss * w).sum() / torch.where(denom > 0, denom, torch.ones_like(denom))


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, where: str) -> None:
    if logits.shape != target.shape:
        raise ConfigError.at(
            where, "model output and target differ in shape",
            got=f"{tuple(logits.shape)} vs {tuple(target.shape)}",
            fix="make the model's out_channels equal the number of classes")


class MaskedLoss(nn.Module):
    """Average an elementwise ``criterion(logits, target)`` over non-NaN target elements.

    ``criterion`` must return a loss shaped like ``logits`` (reduction "none"). NaN targets
    are replaced by 0 before the call and excluded afterwards. With ``class_weights``
    (one per channel) the result is sum(w_c * loss) / sum(w_c) over valid elements.
    """

    def __init__(self, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 class_weights: Sequence[float] | torch.Tensor | None = None, *,
                 where: str = "criterion"):
        super().__init__()
        self.criterion = criterion
        self.where = where
        self.register_buffer("class_weights", _weights_tensor(class_weights))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, target, self.where)
        if not target.is_floating_point():
            target = target.float()
        valid = ~torch.isnan(target)
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ConfigError.at(self.where, "weight_loss needs one weight per class",
                                 got=self.class_weights.tolist(),
                                 fix=f"give {logits.shape[1]} numbers")
        self._fit_per_class_tensors(logits)
        loss = self.criterion(logits, torch.where(valid, target, 0.0))
        if loss.shape != logits.shape:
            raise ConfigError.at(
                self.where, "criterion must return an elementwise loss shaped like the logits",
                got=f"{tuple(loss.shape)} for logits {tuple(logits.shape)}",
                fix="use an elementwise loss such as BCEWithLogitsLoss or MSELoss")
        return masked_mean(loss, valid, self.class_weights)

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


class DiceLoss(nn.Module):
    """Soft Dice on sigmoid probabilities: mean over classes of 1 - dice_c.

    Per class, over the batch and valid voxels: dice_c = (2 sum(p t) + smooth) /
    (sum(p) + sum(t) + smooth). Classes without any valid voxel are left out of the mean.
    """

    def __init__(self, smooth: float = 1.0,
                 class_weights: Sequence[float] | torch.Tensor | None = None):
        super().__init__()
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or smooth < 0:
            raise ValueError(f"smooth must be a number >= 0 (got {smooth!r})")
        self.smooth = float(smooth)
        self.register_buffer("class_weights", _weights_tensor(class_weights))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, target, "dice loss")
        valid = ~torch.isnan(target)
        prob = torch.where(valid, torch.sigmoid(logits.float()), 0.0)
        truth = torch.where(valid, target.float(), 0.0)
        dims = [d for d in range(logits.ndim) if d != 1]
        inter = (prob * truth).sum(dims)
        denom = prob.sum(dims) + truth.sum(dims) + self.smooth
        dice = torch.where(denom > 0, (2 * inter + self.smooth) / denom.clamp_min(1e-12), 1.0)
        present = valid.transpose(0, 1).reshape(valid.shape[1], -1).any(1).float()
        if self.class_weights is not None:
            present = present * self.class_weights.to(present.device)
        n = present.sum()
        return ((1 - dice) * present).sum() / torch.where(n > 0, n, torch.ones_like(n))


class BCEDiceLoss(nn.Module):
    """``bce_weight`` * masked BCE-with-logits + ``dice_weight`` * DiceLoss (both 1 by default)."""

    def __init__(self, pos_weight: torch.Tensor | Sequence[float] | None = None,
                 class_weights: Sequence[float] | torch.Tensor | None = None,
                 smooth: float = 1.0, bce_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        if pos_weight is not None:
            pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32)
        self.bce = MaskedLoss(nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight),
                              class_weights)
        self.dice = DiceLoss(smooth, class_weights)
        self.bce_weight, self.dice_weight = float(bce_weight), float(dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.bce_weight * self.bce(logits, target)
                + self.dice_weight * self.dice(logits, target))


class _CallableLoss(nn.Module):
    """Wraps a plain function so the criterion is always an nn.Module."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, target)


# ---------------------------------------------------------------- building from the config


def _torch_loss_names() -> list[str]:
    return sorted(n for n, obj in vars(nn).items()
                  if isinstance(obj, type) and issubclass(obj, _Loss) and not n.startswith("_"))


def _init_params(cls: type) -> tuple[list[str], bool]:
    """(keyword names of cls.__init__, whether it takes **kwargs)."""
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _per_class(value, name: str, num_classes: int, where: str):
    """Turn a list (or 1-D tensor) of C numbers into a float tensor of shape (C, 1, 1)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.float()
    if isinstance(value, torch.Tensor) and value.ndim > 1:
        return value  # the user shaped it already
    try:
        t = torch.as_tensor(value, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.numel() != num_classes:
        raise ConfigError.at(where, f"criterion_kwargs['{name}'] needs one number per class",
                             got=value, fix=f"give a list of {num_classes} numbers")
    return t.reshape(num_classes, 1, 1)


def _class_weights(kwargs: dict, num_classes: int, where: str):
    if "weight_loss" not in kwargs:
        return None
    value = kwargs.pop("weight_loss")
    try:
        w = _weights_tensor(value)
        ok = w is not None and w.numel() == num_classes
    except (TypeError, ValueError, RuntimeError):
        ok = False
    if not ok:
        raise ConfigError.at(
            where, "criterion_kwargs['weight_loss'] needs one weight >= 0 per class", got=value,
            fix=f"give a list of {num_classes} numbers, not all 0")
    return w


def _instantiate(cls: type, kwargs: dict, class_weights, where: str) -> nn.Module:
    label = getattr(cls, "__name__", repr(cls))
    accepted, var_kw = _init_params(cls)
    takes_reduction = "reduction" in accepted
    if "reduction" in kwargs and takes_reduction:
        raise ConfigError.at(where, "criterion_kwargs must not set 'reduction'",
                             got=kwargs["reduction"],
                             fix="remove it: bioloop averages over annotated voxels itself")
    if class_weights is not None and not takes_reduction and "class_weights" not in accepted:
        raise ConfigError.at(where, f"weight_loss cannot be applied to {label}",
                             got=class_weights.tolist(),
                             fix="use a torch.nn loss with a 'reduction' argument, or drop it")
    if not var_kw:
        bad = [k for k in kwargs if k not in accepted]
        if bad:
            listed = ", ".join(f"{k!r}{_did_you_mean(str(k), accepted)}" for k in bad)
            shown = ", ".join(f"'{a}'" for a in accepted if a != "reduction") or "none"
            raise ConfigError.at(where, f"criterion_kwargs has unknown key(s) for {label}: "
                                 f"{listed}", got=sorted(map(str, kwargs)),
                                 fix=f"accepted keys are {shown}")
    if takes_reduction:
        kwargs = {**kwargs, "reduction": "none"}
    elif class_weights is not None:
        kwargs = {**kwargs, "class_weights": class_weights}
    try:
        made = cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError.at(where, f"cannot build criterion {label}: {exc}",
                             fix="check criterion_kwargs") from exc
    if takes_reduction:
        return MaskedLoss(made, class_weights, where=where)
    return made if isinstance(made, nn.Module) else _CallableLoss(made)


def build_criterion(criterion, criterion_kwargs: Mapping | None, *, where: str,
                    num_classes: int) -> nn.Module:
    """Turn the config's ``criterion`` + ``criterion_kwargs`` into a masked loss module.

    ``criterion`` may be None (masked BCE-with-logits), a torch.nn loss name or "dice" /
    "bce_dice", a loss class, a torch.nn loss instance (a shallow copy with reduction "none"
    is masked), or any callable ``(logits, target) -> scalar``, used as given: it then sees
    NaN targets and must mask them itself. ``pos_weight``/``weight`` lists become (C, 1, 1)
    tensors; ``weight_loss`` gives per-class weights.
    """
    if criterion_kwargs is None:
        criterion_kwargs = {}
    if not isinstance(criterion_kwargs, Mapping):
        raise ConfigError.at(where, "criterion_kwargs must be a dict", got=criterion_kwargs,
                             fix="write criterion_kwargs = {'name': value, ...}")
    kwargs = dict(criterion_kwargs)
    class_weights = _class_weights(kwargs, num_classes, where)
    for name in _PER_CLASS_KWARGS:
        if name in kwargs and kwargs[name] is not None:
            kwargs[name] = _per_class(kwargs[name], name, num_classes, where)

    if criterion is None:
        criterion = nn.BCEWithLogitsLoss
    if isinstance(criterion, str):
        criterion = _class_from_name(criterion, where)
    if isinstance(criterion, type):
        return _instantiate(criterion, kwargs, class_weights, where)
    if kwargs:
        raise ConfigError.at(
            where, "criterion_kwargs only apply when criterion is a name or a class",
            got=sorted(map(str, kwargs)),
            fix="pass the arguments to your criterion object yourself")
    if isinstance(criterion, _Loss) and hasattr(criterion, "reduction"):
        masked = copy.copy(criterion)
        for table in ("_parameters", "_buffers", "_modules"):  # so reshaping never touches
            setattr(masked, table, dict(getattr(criterion, table)))  # the user's object
        masked.reduction = "none"
        return MaskedLoss(masked, class_weights, where=where)
    if class_weights is not None:
        raise ConfigError.at(where, "weight_loss cannot be applied to a custom criterion",
                             got=class_weights.tolist(),
                             fix="weight the classes inside your criterion, or drop weight_loss")
    if callable(criterion):
        return criterion if isinstance(criterion, nn.Module) else _CallableLoss(criterion)
    raise ConfigError.at(where, "criterion must be a loss name, a loss class or a callable",
                         got=criterion, fix="e.g. criterion = 'BCEWithLogitsLoss'")


def _class_from_name(name: str, where: str) -> type:
    if name == "dice":
        return DiceLoss
    if name == "bce_dice":
        return BCEDiceLoss
    choices = _torch_loss_names()
    if name in choices:
        return getattr(nn, name)
    raise ConfigError.at(where, "unknown criterion", got=name,
                         fix=f"use a torch.nn loss class name or one of 'dice', 'bce_dice'"
                             f"{_did_you_mean(name, [*choices, *_BUILTIN_NAMES])}")
