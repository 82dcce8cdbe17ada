"""Built-in architectures, looked up by ``model_name`` with ``model_kwargs``.

``MODELS`` maps a name to a constructor; ``build_model`` turns constructor problems into
ConfigError messages that name the config key; ``register_model`` adds an architecture.
Built in: 2d_unet/3d_unet (unet.py), 2d_resnet/3d_resnet (resnet.py), vitnet (vitnet.py),
unet_xy/unet_xy_zoom (unet_xy.py, valid convolutions: ``output_shape``, ``valid_sizes``,
``check_sizes``) and timm_unet (timm_unet.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from torch import nn

from bioloop.config.structure import did_you_mean as _did_you_mean
from bioloop.errors import ConfigError
from bioloop.models.resnet import ResNet
from bioloop.models.timm_unet import TimmUNet
from bioloop.models.unet import UNet
from bioloop.models.unet_xy import UNetXY, UNetXYZoom, check_sizes, valid_sizes
from bioloop.models.vitnet import ViTVNet

__all__ = ["MODELS", "ResNet", "TimmUNet", "UNet", "UNetXY", "UNetXYZoom", "ViTVNet",
           "build_model", "check_sizes", "register_model", "valid_sizes"]


def _with_dims(cls: type[nn.Module], dims: int, name: str) -> Callable[..., nn.Module]:
    """A ``cls`` constructor with ``dims`` fixed (and removed from its signature)."""

    def make(**kwargs) -> nn.Module:
        return cls(dims=dims, **kwargs)

    sig = inspect.signature(cls)
    make.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for pname, p in sig.parameters.items() if pname != "dims"])
    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"{cls.__name__} with dims={dims}; see {cls.__module__}.{cls.__name__}."
    return make


def _unet_with_dims(dims: int) -> Callable[..., nn.Module]:
    """A UNet constructor with ``dims`` fixed (and removed from its signature)."""
    return _with_dims(UNet, dims, f"unet_{dims}d")


MODELS: dict[str, Callable[..., nn.Module]] = {
    "2d_unet": _unet_with_dims(2),
    "3d_unet": _unet_with_dims(3),
    "2d_resnet": _with_dims(ResNet, 2, "resnet_2d"),
    "3d_resnet": _with_dims(ResNet, 3, "resnet_3d"),
    "vitnet": ViTVNet,
    "unet_xy": UNetXY,
    "unet_xy_zoom": UNetXYZoom,
    "timm_unet": TimmUNet,
}


def register_model(name: str, fn: Callable[..., nn.Module], *, overwrite: bool = False) -> None:
    """Make ``fn(**model_kwargs) -> nn.Module`` available as ``model_name = name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string (got {name!r})")
    if not callable(fn):
        raise TypeError(f"model {name!r}: the constructor must be callable (got {fn!r})")
    if name in MODELS and not overwrite:
        raise ValueError(f"model {name!r} is already registered; pass overwrite=True to replace it")
    MODELS[name] = fn


def _quoted(names) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _accepted_kwargs(fn: Callable) -> list[str] | None:
    """Keyword names ``fn`` accepts, or None when it takes ``**kwargs`` (or has no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def build_model(name: str, kwargs: Mapping | None, *, where: str) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs``; problems raise ConfigError.

    ``where`` prefixes every message, e.g. ``"train.py: model_kwargs"``.
    """
    if not isinstance(name, str) or name not in MODELS:
        fix = f"choose one of {_quoted(MODELS)}"
        if isinstance(name, str):
            fix += _did_you_mean(name, MODELS)
        raise ConfigError.at(where, "unknown model_name", got=name, fix=fix)
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, Mapping):
        raise ConfigError.at(where, "model_kwargs must be a dict", got=kwargs,
                             fix="write model_kwargs = {'name': value, ...}")
    fn = MODELS[name]
    accepted = _accepted_kwargs(fn)
    if accepted is not None:
        bad = [k for k in kwargs if k not in accepted]
        if bad:
            listed = ", ".join(f"{k!r}{_did_you_mean(str(k), accepted)}" for k in bad)
            raise ConfigError.at(
                where, f"model '{name}' does not accept {listed}",
                got=dict(kwargs), fix=f"accepted arguments are {_quoted(accepted)}")
    try:
        return fn(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError.at(where, f"model '{name}' rejected its arguments: {exc}",
                             fix="fix model_kwargs") from exc
