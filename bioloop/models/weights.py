"""Local pretrained weights (timm/torchvision state dicts) for any backbone; never downloads.

Common wrappers (``state_dict``, ``model``, ...) and prefixes (``module.``, ``backbone.``, ...)
are unwrapped, classifier heads dropped, and a first convolution with another number of input
channels adapted (timm's ``adapt_input_conv``). Whatever does not fit is a CheckpointError.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bioloop.errors import CheckpointError

_CLASSIFIER = ("fc.", "classifier.", "head.", "head_drop.", "last_linear.", "head_dist.")
_WRAPPERS = ("state_dict", "model", "model_state", "weights")


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(sd, dict) and not any(torch.is_tensor(v) for v in sd.values()):
        key = next((k for k in _WRAPPERS if isinstance(sd.get(k), dict)), None)
        if key is None:
            break
        sd = sd[key]
    if not isinstance(sd, dict):
        raise TypeError(f"expected a state dict, found {type(sd).__name__}")
    return {k: v for k, v in sd.items() if torch.is_tensor(v)}


def _candidates(sd: dict) -> list[dict]:
    """The checkpoint with common prefixes stripped or added, classifier keys dropped."""
    base = {k: v for k, v in sd.items() if not k.startswith(_CLASSIFIER)}
    out = [base]
    for prefix in ("module.", "backbone.body.", "backbone.", "body.", "model."):
        stripped = {k[len(prefix):]: v for k, v in base.items() if k.startswith(prefix)}
        if stripped:
            out.append({k: v for k, v in stripped.items() if not k.startswith(_CLASSIFIER)})
    out.append({"model." + k: v for k, v in base.items()})  # timm ViT feature wrappers
    return out


def load_weights(module: nn.Module, path, *, where: str = "pretrained") -> None:
    """Load a local timm/torchvision state dict into ``module`` (extra keys are ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError.at(where, "the weights file does not exist", got=str(path),
                                 fix="pass the path of a downloaded .pth/.pt/.safetensors file")
    try:
        sd = _read_state_dict(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise CheckpointError.at(where, f"cannot read the weights file {path} ({exc})",
                                 got=str(path), fix="pass a torch state dict file") from exc
    own = module.state_dict()
    best = max(_candidates(sd), key=lambda c: len(own.keys() & c.keys()))
    missing = sorted(own.keys() - best.keys())
    if missing:
        raise CheckpointError.at(where, f"{path} does not fit this backbone: {len(missing)} of "
                                 f"{len(own)} weights are missing, e.g. {missing[:3]}",
                                 got=str(path), fix="use weights of the same architecture")
    state = {}
    for key, value in own.items():
        new = best[key]
        if new.ndim == 4 and value.ndim == 4 and new.shape[1] != value.shape[1] \
                and new.shape[0] == value.shape[0] and new.shape[2:] == value.shape[2:]:
            from timm.models import adapt_input_conv
            new = adapt_input_conv(value.shape[1], new)  # first conv with other in_channels
        if new.shape != value.shape:
            raise CheckpointError.at(where, f"{path}: weight {key!r} has shape "
                                     f"{tuple(new.shape)} but the backbone needs "
                                     f"{tuple(value.shape)}", got=str(path),
                                     fix="use weights of the same architecture and variant")
        state[key] = new.to(value.dtype)
    module.load_state_dict(state)
