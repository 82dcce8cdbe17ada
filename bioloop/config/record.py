"""Run records written before the first training step.

A run folder gets a byte copy of the config file, the resolved settings as YAML and
``run.json`` (argv, versions, host, config hash, start time). Nothing is ever
overwritten silently: an edited config on resume is kept beside the original, and a
previous ``run.json`` is carried inside the new one under ``previous_runs``.
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from bioloop.data.atomic import atomic_write_bytes as _write_atomic

RESOLVED_NAME = "resolved_config.yaml"
RUN_JSON = "run.json"
_VERSIONED = ("torch", "numpy", "zarr", "torchvision")


def config_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_run_records(
    run_dir: Path, *, config_path: Path | None, resolved: dict, extra: dict | None = None
) -> dict:
    """Write the config copy, ``resolved_config.yaml`` and ``run.json``; return run.json's dict.

    ``resolved`` must be plain data (str/int/float/bool/None/list/dict).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    config_bytes = None
    if config_path is not None:
        config_path = Path(config_path)
        config_bytes = config_path.read_bytes()
        _copy_config(run_dir, config_path.name, config_bytes, now)
    _write_atomic(run_dir / RESOLVED_NAME, _dump_yaml(resolved).encode("utf-8"))

    digest = hashlib.sha256(config_bytes).hexdigest() if config_bytes is not None else None
    record: dict[str, Any] = {
        "argv": list(sys.argv),
        "start_time": now.isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "user": _user(),
        "cwd": os.getcwd(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "versions": _versions(),
        "config_path": str(config_path.resolve()) if config_path is not None else None,
        "config_sha256": digest,
        "cuda": _cuda_info(),
    }
    record.update(extra or {})
    previous = _read_previous(run_dir / RUN_JSON)
    if previous is not None:
        earlier = previous.pop("previous_runs", []) if isinstance(previous, dict) else []
        record["previous_runs"] = [*earlier, previous]
    _write_json(run_dir / RUN_JSON, record)
    return record


def update_run_json(run_dir: Path, **fields: Any) -> dict:
    """Merge ``fields`` into ``run_dir/run.json`` (top-level keys) and return the result."""
    path = Path(run_dir) / RUN_JSON
    current = _read_previous(path)
    if not isinstance(current, dict) or "unreadable_run_json" in current:
        current = {} if current is None else {"previous_runs": [current]}
    current.update(fields)
    _write_json(path, current)
    return current


# -- helpers -------------------------------------------------------------------------


def _copy_config(run_dir: Path, name: str, data: bytes, now: datetime) -> Path:
    """Copy the config bytes as ``name``; keep an existing different copy, add a dated one."""
    if name in (RESOLVED_NAME, RUN_JSON):
        name = f"config_{name}"
    target = run_dir / name
    if not target.exists():
        _write_atomic(target, data)
        return target
    stem, suffix = Path(name).stem, Path(name).suffix
    for candidate in [target, *sorted(run_dir.glob(f"{glob.escape(stem)}.*{glob.escape(suffix)}"))]:
        if candidate.is_file() and candidate.read_bytes() == data:
            return candidate  # this exact config is already recorded
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    dated = run_dir / f"{stem}.{stamp}{suffix}"
    count = 1
    while dated.exists():
        count += 1
        dated = run_dir / f"{stem}.{stamp}-{count}{suffix}"
    _write_atomic(dated, data)
    return dated


def _dump_yaml(resolved: dict) -> str:
    try:
        return yaml.safe_dump(
            resolved, sort_keys=False, default_flow_style=False, allow_unicode=True
        )
    except yaml.representer.RepresenterError as error:
        raise TypeError(
            f"resolved settings must be plain data (str/int/float/bool/None/list/dict): {error}"
        ) from None


def _write_json(path: Path, record: dict) -> None:
    text = json.dumps(record, indent=2, default=str) + "\n"
    _write_atomic(path, text.encode("utf-8"))


def _read_previous(path: Path) -> Any:
    """The parsed JSON at ``path``; None when missing; raw text kept when unreadable."""
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"unreadable_run_json": text}


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (containers)
        return None


def _versions() -> dict[str, str]:
    from bioloop._version import __version__

    versions = {"bioloop": __version__}
    for name in _VERSIONED:
        version = _version_of(name)
        if version is not None:
            versions[name] = version
    return versions


def _version_of(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"available": False, "device_names": []}
    available = bool(torch.cuda.is_available())
    names: list[str] = []
    if available:
        try:
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # a broken driver must not stop the run from starting
            names = []
    return {"available": available, "device_names": names}


__all__ = ["write_run_records", "update_run_json", "config_sha256", "RESOLVED_NAME", "RUN_JSON"]
