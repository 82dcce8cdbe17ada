"""Building the segmentation criterion from the config: ``build_criterion`` and ``activation_for``.

Turns ``criterion`` + ``criterion_kwargs`` (a name, class, instance or callable) into one of the
masked loss modules of ``losses``. Both names are re-exported by ``losses``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from bioloop.config.structure import did_you_mean as _did_you_mean
from bioloop.errors import ConfigError
from bioloop.tasks.segmentation.losses import (_BASES, _PER_CLASS_KWARGS, _TWO_CLASSES,
                                               _TWO_CLASSES_FIX, AuxLoss, BCEDiceLoss,
                                               ClassWeights, DiceLoss, MaskedLoss,
                                               SoftmaxCrossEntropyLoss, _init_params,
                                               _weights_tensor)

__all__ = ["activation_for", "build_criterion"]

_BUILTIN_NAMES = ("dice", "bce_dice")  # listed in the unknown-criterion message
_MORE_NAMES = ("cross_entropy", "aux")


def _shown(class_weights: ClassWeights):
    return class_weights.tolist() if isinstance(class_weights, torch.Tensor) else class_weights


class _CallableLoss(nn.Module):
    """Wraps a plain function so the criterion is always an nn.Module."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, output, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is None:
            return self.fn(output, target)
        return self.fn(output, target, weight=weight)


def activation_for(criterion, criterion_kwargs: Mapping | None = None) -> str:
    """"softmax" or "sigmoid": the activation a model trained with ``criterion`` needs.

    ``criterion`` is the config value (a name, class, instance or callable) or the module
    ``build_criterion`` made. Softmax for "cross_entropy" and for "aux" whose ``base`` (in
    ``criterion_kwargs``) is "cross_entropy" (the default); an object with an ``activation``
    attribute of "softmax"/"sigmoid" gives that; everything else is sigmoid.
    """
    if isinstance(criterion, _CallableLoss):
        criterion = criterion.fn
    base = dict(criterion_kwargs or {}).get("base", "cross_entropy")
    if criterion is AuxLoss or (isinstance(criterion, str) and criterion == "aux"):
        criterion = _BASES.get(base) if isinstance(base, str) else None
    if isinstance(criterion, str):
        return "softmax" if criterion == "cross_entropy" else "sigmoid"
    declared = getattr(criterion, "activation", None)
    return declared if declared in ("softmax", "sigmoid") else "sigmoid"


# ---------------------------------------------------------------- building from the config


def _torch_loss_names() -> list[str]:
    return sorted(n for n, obj in vars(nn).items()
                  if isinstance(obj, type) and issubclass(obj, _Loss) and not n.startswith("_"))


def _takes_weight(criterion) -> bool:
    """Whether ``criterion(output, target, weight=...)`` works (True when it cannot be told)."""
    fn = criterion.fn if isinstance(criterion, _CallableLoss) else criterion
    names, var_kw = _init_params(fn.forward if isinstance(fn, nn.Module) else fn)
    return var_kw or "weight" in names


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
    """The popped ``weight_loss``: None, "balanced" or a (C,) tensor."""
    if "weight_loss" not in kwargs:
        return None
    value = kwargs.pop("weight_loss")
    if isinstance(value, str) and value == "balanced":
        return value
    try:
        w = _weights_tensor(value)
        ok = w is not None and w.numel() == num_classes
    except (TypeError, ValueError, RuntimeError):
        ok = False
    if not ok:
        hint = _did_you_mean(value, ["balanced"]) if isinstance(value, str) else ""
        raise ConfigError.at(
            where, "criterion_kwargs['weight_loss'] needs one weight >= 0 per class", got=value,
            fix=f"give a list of {num_classes} numbers, not all 0, or 'balanced'{hint}")
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
                             got=_shown(class_weights),
                             fix="use a torch.nn loss with a 'reduction' argument, or drop it")
    if not var_kw:
        bad = [k for k in kwargs if k not in accepted or k == "where"]
        if bad:
            shown = [("weight_loss" if a == "class_weights" else a) for a in accepted
                     if a not in ("reduction", "where")]
            listed = ", ".join(f"{k!r}{_did_you_mean(str(k), shown)}" for k in bad)
            shown_text = ", ".join(f"'{a}'" for a in shown) or "none"
            raise ConfigError.at(where, f"criterion_kwargs has unknown key(s) for {label}: "
                                 f"{listed}", got=sorted(map(str, kwargs)),
                                 fix=f"accepted keys are {shown_text}")
    if takes_reduction:
        kwargs = {**kwargs, "reduction": "none"}
    elif class_weights is not None:
        kwargs = {**kwargs, "class_weights": class_weights}
    if cls in (DiceLoss, BCEDiceLoss, SoftmaxCrossEntropyLoss, AuxLoss):
        kwargs = {**kwargs, "where": where}
    try:
        made = cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError.at(where, f"cannot build criterion {label}: {exc}",
                             fix="check criterion_kwargs") from exc
    if takes_reduction:
        return MaskedLoss(made, class_weights, where=where)
    return made if isinstance(made, nn.Module) else _CallableLoss(made)


def build_criterion(criterion, criterion_kwargs: Mapping | None, *, where: str,
                    num_classes: int, has_cost_map: bool = False) -> nn.Module:
    """Turn the config's ``criterion`` + ``criterion_kwargs`` into a masked loss module.

    ``criterion`` may be None (masked BCE-with-logits), a torch.nn loss name, "dice",
    "bce_dice", "cross_entropy" (softmax), "aux" (Allen auxiliary loss), a loss class, a
    torch.nn loss instance (a shallow copy with reduction "none" is masked), or any callable
    ``(output, target) -> scalar``, used as given: it then sees NaN targets and must mask
    them itself. ``pos_weight``/``weight`` lists become (C, 1, 1) tensors; ``weight_loss``
    gives per-class weights or "balanced". With ``has_cost_map`` the criterion will be called
    as ``(output, target, weight=cost)``, so a custom one must take ``weight``.
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
    made = _build(criterion, kwargs, class_weights, where)
    if has_cost_map and not _takes_weight(made):
        raise ConfigError.at(
            where, "the training data has cost maps (per-voxel loss weights) but the custom "
            "criterion cannot take them", got=getattr(criterion, "__name__", repr(criterion)),
            fix="give its forward a 'weight=None' argument (a (B, 1, *spatial) tensor), or use a "
                "built-in criterion")
    if activation_for(made) == "softmax" and num_classes < 2:
        raise ConfigError.at(where, _TWO_CLASSES, got=num_classes, fix=_TWO_CLASSES_FIX)
    return made


def _build(criterion, kwargs: dict, class_weights, where: str) -> nn.Module:
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
                             got=_shown(class_weights),
                             fix="weight the classes inside your criterion, or drop weight_loss")
    if callable(criterion):
        return criterion if isinstance(criterion, nn.Module) else _CallableLoss(criterion)
    raise ConfigError.at(where, "criterion must be a loss name, a loss class or a callable",
                         got=criterion, fix="e.g. criterion = 'BCEWithLogitsLoss'")


def _class_from_name(name: str, where: str) -> type:
    builtins = {"dice": DiceLoss, "bce_dice": BCEDiceLoss,
                "cross_entropy": SoftmaxCrossEntropyLoss, "aux": AuxLoss}
    if name in builtins:
        return builtins[name]
    choices = _torch_loss_names()
    if name in choices:
        return getattr(nn, name)
    raise ConfigError.at(where, "unknown criterion", got=name,
                         fix=f"use a torch.nn loss class name or one of 'dice', 'bce_dice'"
                             f"{_did_you_mean(name, [*choices, *_BUILTIN_NAMES, *_MORE_NAMES])}")
