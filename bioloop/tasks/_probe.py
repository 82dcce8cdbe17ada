"""Cheap checks `bioloop config check` runs through each task's ``check_config``: files exist, the model builds.

Shared by the task packages (no task imports another). The model is built on torch's meta device:
shapes and names are checked, no memory is filled, and no weights are read or downloaded.
"""

from __future__ import annotations

from pathlib import Path

from bioloop.errors import BioloopError


def missing_files(where: str, key: str, paths, *, folder: bool = False) -> list[str]:
    """A message for the paths among ``paths`` that do not exist."""
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths or []) if p]
    exists = (lambda p: Path(p).is_dir()) if folder else (lambda p: Path(p).exists())
    missing = [p for p in paths if "://" not in p and not exists(p)]
    if not missing:
        return []
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    kind = "folder" if folder else "file"
    return [f"{where}: {key}: {len(missing)} {kind}{'s' if len(missing) > 1 else ''} not found ({shown}); "
            "check the path (relative paths start at the config file's folder)"]


def build_on_meta(task, cfg) -> list[str]:
    """Build the task's model on the meta device; a BioloopError becomes a message."""
    import torch

    try:
        with torch.device("meta"):
            task.build_model(cfg)
    except BioloopError as exc:
        return [str(exc)]
    return []
