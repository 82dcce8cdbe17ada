"""Build optimizers and learning-rate schedulers from config specs.

A spec is None, a live object, a class, a callable, a type name, or a dict
``{"type": "AdamW", "params": {...}}``; schedulers nest (SequentialLR, ChainedScheduler).
Problems raise :class:`ConfigError` naming the config file and the key.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import lr_scheduler as _sched
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from bioloop.config.structure import did_you_mean as _did_you_mean
from bioloop.errors import ConfigError

_SPEC_KEYS = {"type", "params"}
_NESTED = {"SequentialLR", "ChainedScheduler"}


class LRListScheduler(LRScheduler):
    """Set fixed learning rates from given epochs on (DeepLabCut style).

    From epoch ``milestones[i]`` on, the learning rate becomes ``lr_list[i]``: one value
    for every param group, or one value per group. Before the first milestone the
    initial learning rate stays.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: list[int],
        lr_list: list[list[float]] | list[float],
        last_epoch: int = -1,
    ) -> None:
        self.milestones = _check_milestones(milestones)
        self.lr_list = _check_lr_list(lr_list, len(self.milestones), len(optimizer.param_groups))
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """New lrs at the current epoch: the listed ones at a milestone, else unchanged."""
        if self.last_epoch in self.milestones:
            return self._expand(self.lr_list[self.milestones.index(self.last_epoch)])
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        index = bisect.bisect_right(self.milestones, self.last_epoch) - 1
        if index < 0:
            return [float(lr) for lr in self.base_lrs]
        return self._expand(self.lr_list[index])

    def _expand(self, lrs: list[float]) -> list[float]:
        return list(lrs) * len(self.optimizer.param_groups) if len(lrs) == 1 else list(lrs)


def build_optimizer(
    spec: Any,
    params: Iterable,
    *,
    learning_rate: float,
    where: str,
    key: str = "optimizer",
) -> Optimizer:
    """Build the optimizer for ``params`` from a config spec (``where`` is the config file)."""
    params = list(params)
    at = f"{where}: {key}"
    if spec is None:
        kwargs = {"lr": learning_rate}
        if "decoupled_weight_decay" in inspect.signature(torch.optim.RAdam).parameters:
            kwargs["decoupled_weight_decay"] = True
        return torch.optim.RAdam(params, **kwargs)
    if isinstance(spec, Optimizer):
        _check_optimizer_owns(spec, params, at)
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if isinstance(spec, Mapping):
        cls, kwargs = _resolve_spec(spec, at, "optimizer", _optimizer_classes())
        return _construct(cls, (params,), {"lr": learning_rate, **kwargs}, at)
    if isinstance(spec, type) and issubclass(spec, Optimizer):
        return _construct(spec, (params,), {"lr": learning_rate}, at)
    if callable(spec):
        result = spec(params)
        if not isinstance(result, Optimizer):
            raise ConfigError.at(
                at, "the optimizer callable did not return a torch.optim.Optimizer",
                got=type(result).__name__, fix="return e.g. torch.optim.AdamW(params, lr=...)",
            )
        return result
    raise _bad_form(at, spec, "optimizer", "torch.optim.AdamW(model.parameters())")


def build_scheduler(
    spec: Any, optimizer: Optimizer, *, where: str, key: str = "scheduler"
) -> LRScheduler | None:
    """Build the lr scheduler for ``optimizer`` from a config spec, or None."""
    if spec is None:
        return None
    at = f"{where}: {key}"
    if isinstance(spec, (LRScheduler, ReduceLROnPlateau)):
        if getattr(spec, "optimizer", None) is not optimizer:
            raise ConfigError.at(
                at, "the scheduler wraps a different optimizer than the one training uses",
                fix="build it from the config's optimizer instance, or pass a class, a "
                "callable(optimizer) or a spec {'type': ..., 'params': {...}}",
            )
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if isinstance(spec, Mapping):
        cls, kwargs = _resolve_spec(spec, at, "scheduler", _scheduler_classes())
        if cls.__name__ in _NESTED and cls.__module__ == _sched.__name__:
            return _build_nested(cls, kwargs, optimizer, where, key)
        return _construct(cls, (optimizer,), kwargs, at)
    if isinstance(spec, type) and issubclass(spec, (LRScheduler, ReduceLROnPlateau)):
        return _construct(spec, (optimizer,), {}, at)
    if callable(spec):
        result = spec(optimizer)
        if not isinstance(result, (LRScheduler, ReduceLROnPlateau)):
            raise ConfigError.at(
                at, "the scheduler callable did not return a learning-rate scheduler",
                got=type(result).__name__, fix="return e.g. StepLR(optimizer, step_size=10)",
            )
        return build_scheduler(result, optimizer, where=where, key=key)
    raise _bad_form(at, spec, "scheduler", "{'type': 'StepLR', 'params': {'step_size': 10}}")


def step_scheduler(scheduler: LRScheduler | None, metric: float | None = None) -> None:
    """Step ``scheduler``; ReduceLROnPlateau needs ``metric`` and is skipped without one."""
    if scheduler is None:
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        if metric is not None:
            scheduler.step(metric)
        return
    scheduler.step()


def current_lrs(optimizer: Optimizer) -> list[float]:
    """The learning rate of every param group, as floats."""
    return [float(group["lr"]) for group in optimizer.param_groups]


# --------------------------------------------------------------------------- helpers


def _build_nested(cls: type, kwargs: dict, optimizer: Optimizer, where: str, key: str):
    at = f"{where}: {key}.params"
    inner = kwargs.pop("schedulers", None)
    if not isinstance(inner, (list, tuple)) or not inner:
        raise ConfigError.at(
            at, f"{cls.__name__} needs 'schedulers': a non-empty list of scheduler specs",
            got=inner, fix="e.g. {'schedulers': [{'type': 'LinearLR'}, {'type': 'StepLR', ...}]}",
        )
    built = [
        build_scheduler(s, optimizer, where=where, key=f"{key}.params.schedulers[{i}]")
        for i, s in enumerate(inner)
    ]
    if any(s is None for s in built):
        raise ConfigError.at(at, f"{cls.__name__} schedulers cannot be None", got=list(inner))
    if cls is _sched.ChainedScheduler:
        return _construct(cls, (built,), {"optimizer": optimizer, **kwargs}, at)
    return _construct(cls, (optimizer,), {"schedulers": built, **kwargs}, at)


def _resolve_spec(spec: Mapping, at: str, kind: str, classes: dict[str, type]) -> tuple[type, dict]:
    unknown = sorted(str(k) for k in spec if k not in _SPEC_KEYS)
    if unknown:
        raise ConfigError.at(
            at, f"unknown key(s) {unknown} in the {kind} spec",
            fix="a spec has only 'type' and 'params': {'type': ..., 'params': {...}}",
        )
    name = spec.get("type")
    if not isinstance(name, str):
        example = "AdamW" if kind == "optimizer" else "StepLR"
        raise ConfigError.at(at, f"the {kind} spec needs a 'type' name", got=name,
                             fix=f"e.g. {{'type': {example!r}, 'params': {{...}}}}")
    params = spec.get("params", {})
    params = {} if params is None else params
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ConfigError.at(f"{at}.params", "must be a dict of keyword arguments", got=params)
    if name not in classes:
        hint = _did_you_mean(name, classes)
        raise ConfigError.at(at, f"unknown {kind} type {name!r}{hint}",
                             fix=None if hint else f"choose one of: {', '.join(sorted(classes))}")
    return classes[name], dict(params)


def _construct(cls: type, args: tuple, kwargs: dict, at: str):
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError.at(
            at, f"cannot build {cls.__name__} ({exc})",
            got={k: v for k, v in kwargs.items() if k not in ("optimizer", "schedulers")},
            fix=f"{cls.__name__} accepts {_accepted_names(cls)}",
        ) from exc


def _check_optimizer_owns(optimizer: Optimizer, params: list, at: str) -> None:
    wanted = {id(p) for p in _flatten_params(params)}
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if wanted and not wanted & owned:
        raise ConfigError.at(
            at, "the optimizer was built for a different model: none of its parameters "
            "belong to the model being trained",
            fix="build it from model.parameters() of the config's model, or pass a class or "
            "a spec {'type': 'AdamW', 'params': {...}}",
        )


def _flatten_params(params: list) -> list:
    flat = []
    for item in params:
        if isinstance(item, dict):
            group = item.get("params", [])
            flat.extend([group] if isinstance(group, torch.Tensor) else list(group))
        elif isinstance(item, tuple) and len(item) == 2:  # named parameters
            flat.append(item[1])
        else:
            flat.append(item)
    return flat


def _optimizer_classes() -> dict[str, type]:
    return {
        name: obj for name, obj in vars(torch.optim).items()
        if inspect.isclass(obj) and issubclass(obj, Optimizer) and obj is not Optimizer
        and not name.startswith("_")
    }


def _scheduler_classes() -> dict[str, type]:
    found = {
        name: obj for name, obj in vars(_sched).items()
        if inspect.isclass(obj) and issubclass(obj, (LRScheduler, ReduceLROnPlateau))
        and obj is not LRScheduler and not name.startswith("_")
    }
    found["LRListScheduler"] = LRListScheduler
    return found


def _accepted_names(cls: type) -> str:
    try:
        names = list(inspect.signature(cls).parameters)[1:]  # skip params/optimizer
    except (TypeError, ValueError):
        return "the arguments in its documentation"
    return ", ".join(names) if names else "no further arguments"


def _bad_form(at: str, spec: Any, kind: str, example: str) -> ConfigError:
    return ConfigError.at(
        at, f"cannot make the {kind} from this value", got=spec,
        fix=f"give None, an instance, a class, a callable, a type name or a spec like {example}",
    )


def _check_milestones(milestones: Any) -> list[int]:
    values = list(milestones)
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in values):
        raise ValueError(f"milestones must be non-negative ints (got {values!r})")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"milestones must be strictly increasing (got {values!r})")
    return values


def _check_lr_list(lr_list: Any, n_milestones: int, n_groups: int) -> list[list[float]]:
    entries = list(lr_list)
    if len(entries) != n_milestones:
        raise ValueError(
            f"lr_list needs one entry per milestone: {n_milestones} milestone(s) but "
            f"{len(entries)} lr entries (got {entries!r})"
        )
    result = []
    for entry in entries:
        lrs = [entry] if isinstance(entry, (int, float)) else list(entry)
        if len(lrs) not in (1, n_groups) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in lrs
        ):
            raise ValueError(
                f"each lr_list entry must be one lr >= 0 or one per param group ({n_groups}) "
                f"(got {entry!r})"
            )
        result.append([float(v) for v in lrs])
    return result
