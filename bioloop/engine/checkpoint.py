"""Checkpoint files: atomic writes, safe loads, strict model loading, and the manifest.

Every failure raises :class:`CheckpointError` naming the file: a run never silently
restarts from scratch or from an older checkpoint than the one asked for.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from bioloop.data.atomic import atomic_write
from bioloop.errors import CheckpointError

MANIFEST_NAME = "manifest.json"
_MODEL_STATE_KEYS = ("model", "state_dict", "model_state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_LIST_LIMIT = 5


# --------------------------------------------------------------------------- files


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` via a temp file, fsync and rename.

    A failure leaves any previous file at ``path`` intact and no temp file behind.
    """
    return _write_atomic(Path(path), lambda handle: torch.save(obj, handle), binary=True)


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict:
    """Load a bioloop checkpoint (a dict with a ``"model"`` state dict) safely."""
    path = Path(path)
    data = _torch_load(path, map_location)
    if not isinstance(data, dict) or not isinstance(data.get("model"), Mapping):
        raise CheckpointError.at(
            path,
            "not a bioloop checkpoint: it has no 'model' state dict "
            f"(found {_describe_keys(data)})",
            fix="pass a file written by bioloop, or give plain weights as model_to_load "
            "to start from them",
        )
    return data


def load_weights(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict:
    """Return the model state dict from a bioloop checkpoint or a raw ``state_dict`` file."""
    path = Path(path)
    data = _torch_load(path, map_location)
    if isinstance(data, Mapping):
        for key in _MODEL_STATE_KEYS:
            if isinstance(data.get(key), Mapping):
                return dict(data[key])
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            return dict(data)
    raise CheckpointError.at(
        path,
        "holds no model weights: expected a bioloop checkpoint or a dict of tensors "
        f"(found {_describe_keys(data)})",
        fix="save weights with torch.save(model.state_dict(), path)",
    )


def apply_model_state(model: nn.Module, state_dict: Mapping, *, path: str | os.PathLike) -> None:
    """Load ``state_dict`` into ``model`` strictly; mismatches raise CheckpointError."""
    model_state = model.state_dict()
    state = _strip_wrapper_prefixes(dict(state_dict), set(model_state))
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    mismatched = [
        (k, tuple(state[k].shape), tuple(model_state[k].shape))
        for k in model_state
        if k in state
        and hasattr(state[k], "shape")
        and hasattr(model_state[k], "shape")
        and tuple(state[k].shape) != tuple(model_state[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short_list(unexpected)}")
        if mismatched:
            shown = [f"{k} (checkpoint {list(c)} vs model {list(m)})" for k, c, m in mismatched]
            parts.append(f"{len(mismatched)} shape mismatch(es): {_short_list(shown)}")
        raise CheckpointError.at(
            path,
            "checkpoint does not fit the model: " + "; ".join(parts),
            fix="use the same model, model_name and model_kwargs as the run that wrote it",
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError.at(path, f"cannot load weights into the model: {exc}") from exc


# --------------------------------------------------------------------------- manager


class CheckpointManager:
    """Epoch, best and interrupt checkpoints of one model in one folder, with a manifest.

    The manifest (``manifest.json``) records every snapshot with its metrics, the best
    file per metric and the latest resumable file; it is the source of truth for
    :meth:`latest` and :meth:`best`. Several models may share a folder: the manifest then
    keeps one record per model name.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        model_name: str,
        filename_template: str = "{model_name}_{epoch}.pth",
        max_snapshots: int | None = None,
    ) -> None:
        fields = _template_fields(filename_template)
        if "epoch" not in fields:
            raise ValueError(
                f"filename_template must contain '{{epoch}}' (got {filename_template!r})"
            )
        unknown = sorted(fields - {"epoch", "model_name", "step"})
        if unknown or "/" in filename_template or "\\" in filename_template:
            raise ValueError(
                "filename_template may only use {model_name}, {epoch} and {step} and no "
                f"folder separators (got {filename_template!r})"
            )
        if max_snapshots is not None and (isinstance(max_snapshots, bool) or max_snapshots < 1):
            raise ValueError(f"max_snapshots must be None or >= 1 (got {max_snapshots!r})")
        self.directory = Path(directory)
        self.model_name = model_name
        self.filename_template = filename_template
        self.max_snapshots = max_snapshots

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME

    @property
    def interrupt_file(self) -> str:
        return f"{self.model_name}_interrupted.pth"

    def save_epoch(
        self, state: dict, *, epoch: int, step: int, metrics: Mapping[str, float]
    ) -> Path:
        """Write the epoch snapshot, make it the latest, drop the interrupt file, prune."""
        name = self.filename_template.format(model_name=self.model_name, epoch=epoch, step=step)
        self._claim(name)
        path = save_atomic(state, self.directory / name)
        manifest = self._read_manifest()
        snapshots = [s for s in manifest["snapshots"] if s["file"] != name]
        snapshots.append(
            {"file": name, "epoch": int(epoch), "step": int(step),
             "metrics": {str(k): _json_float(v) for k, v in metrics.items()}, "time": _now()}
        )
        stale = [] if name == self.interrupt_file else [self.interrupt_file]
        manifest.update(snapshots=snapshots, latest=name, interrupted=None)
        stale += self._prune(manifest)
        self._write_manifest(manifest)
        for old in stale:
            (self.directory / old).unlink(missing_ok=True)
        return path

    def save_best(
        self, state: dict, *, metric: str, value: float, epoch: int, primary: bool
    ) -> Path:
        """Write the best file for ``metric`` (``{model_name}_best.pth`` when primary)."""
        name = f"{self.model_name}_best.pth" if primary else (
            f"{self.model_name}_best_{_sanitise(metric)}.pth")
        self._claim(name)
        path = save_atomic(state, self.directory / name)
        manifest = self._read_manifest()
        best = {m: e for m, e in manifest["best"].items() if e.get("file") != name}
        best[str(metric)] = {"file": name, "value": _json_float(value), "epoch": int(epoch),
                             "primary": bool(primary)}
        manifest["best"] = best
        self._write_manifest(manifest)
        return path

    @property
    def best_weights_file(self) -> str:
        return f"{self.model_name}_best_weights.pth"

    def save_best_weights(self, state: dict) -> Path:
        """Write ``{model_name}_best_weights.pth`` (a weights-only export of the primary best model).

        It is not a snapshot: the manifest does not list it and pruning never deletes it."""
        return save_atomic(state, self.directory / self.best_weights_file)

    def save_interrupt(self, state: dict, *, epoch: int, step: int) -> Path:
        """Write a mid-epoch checkpoint and make it the latest (resume starts from it)."""
        name = self.interrupt_file
        self._claim(name)
        path = save_atomic(state, self.directory / name)
        manifest = self._read_manifest()
        manifest.update(
            interrupted={"file": name, "epoch": int(epoch), "step": int(step), "time": _now()},
            latest=name,
        )
        self._write_manifest(manifest)
        return path

    def latest(self) -> Path | None:
        """The most recently written resumable checkpoint, or None for a fresh folder."""
        if not self._has_record():
            orphans = self._orphan_checkpoints()
            if orphans:
                raise CheckpointError.at(
                    self.manifest_path,
                    f"the manifest is missing but the folder holds {len(orphans)} checkpoint(s)"
                    if not self.manifest_path.exists() else
                    f"the manifest has no record of {self.model_name!r} but the folder holds "
                    f"{len(orphans)} of its checkpoint(s)",
                    got=[p.name for p in orphans[-_LIST_LIMIT:]],
                    fix=f"pass the file to resume from explicitly: load_model = '{orphans[-1]}'",
                )
            return None
        name = self._read_manifest().get("latest")
        return None if name is None else self._existing(name, "latest checkpoint")

    def best(self, metric: str | None = None) -> Path | None:
        """The best file for ``metric`` (the primary one when None), or None if none yet."""
        if not self.manifest_path.exists():
            return None
        entries = self._read_manifest()["best"]
        if metric is None:
            entry = next((e for e in entries.values() if e.get("primary")), None)
        else:
            entry = entries.get(metric)
        return None if entry is None else self._existing(entry["file"], "best checkpoint")

    def entries(self) -> list[dict]:
        """The epoch snapshots recorded in the manifest, oldest first (copies)."""
        if not self.manifest_path.exists():
            return []
        return [dict(s) for s in self._read_manifest()["snapshots"]]

    # ----------------------------------------------------------------- internals

    def _existing(self, name: str, what: str) -> Path:
        path = self.directory / name
        if not path.is_file():
            raise CheckpointError.at(
                path,
                f"the manifest lists this file as the {what} but it does not exist",
                fix=f"restore the file, or pass another checkpoint explicitly as load_model "
                f"(see {self.manifest_path})",
            )
        return path

    # The manifest of a folder with one model is that model's record (``model_name``, ``snapshots``,
    # ``best``, ``latest``, ``interrupted`` at the top). When a second model saves into the same
    # folder, the file becomes ``{"models": {name: record, ...}}``, keyed by model name; both layouts
    # are read, so manifests written before this layout existed stay valid.

    def _read_file(self) -> dict | None:
        path = self.manifest_path
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found {type(data).__name__}")
            if "models" in data:
                if not isinstance(data["models"], dict):
                    raise ValueError("'models' must be a JSON object")
                records = list(data["models"].values())
            else:
                records = [data]
            for record in records:
                _check_record(record)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError.at(
                path,
                f"the checkpoint manifest is unreadable ({exc})",
                fix="repair or delete it and pass the checkpoint to resume explicitly "
                "as load_model",
            ) from exc
        return data

    def _records(self) -> dict[str, dict]:
        """Every model's record in the manifest, by model name."""
        data = self._read_file()
        if data is None:
            return {}
        if "models" in data:
            return dict(data["models"])
        return {data.get("model_name", self.model_name): data}

    def _has_record(self) -> bool:
        return self.model_name in self._records()

    def _read_manifest(self) -> dict:
        data = self._records().get(self.model_name)
        if data is None:
            return {"model_name": self.model_name, "snapshots": [], "best": {},
                    "latest": None, "interrupted": None}
        data.setdefault("latest", None)
        data.setdefault("interrupted", None)
        return data

    def _claim(self, name: str) -> None:
        """Refuse to write ``name`` when the manifest lists it for another model (a shared template)."""
        for model, record in self._records().items():
            if model == self.model_name:
                continue
            files = {s["file"] for s in record["snapshots"]} | {e.get("file") for e in record["best"].values()}
            files |= {record.get("latest"), (record.get("interrupted") or {}).get("file")}
            if name in files:
                raise CheckpointError.at(
                    self.directory / name, f"this file belongs to model {model!r} in the same folder",
                    got=self.model_name,
                    fix="put {model_name} in the file name of model_save_path, or give this model its own folder")

    def _write_manifest(self, manifest: dict) -> None:
        manifest["model_name"] = self.model_name
        records = self._records()
        if set(records) - {self.model_name}:  # several models share the folder: keyed by model name
            records[self.model_name] = manifest
            for name, record in records.items():
                record["model_name"] = name
            data = {"models": dict(sorted(records.items()))}
        else:
            data = manifest
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        _write_atomic(self.manifest_path, lambda handle: handle.write(text), binary=False)

    def _prune(self, manifest: dict) -> list[str]:
        """Drop the oldest snapshots beyond max_snapshots; return the files to delete."""
        snapshots = manifest["snapshots"]
        if self.max_snapshots is None or len(snapshots) <= self.max_snapshots:
            return []
        protected = {e.get("file") for e in manifest["best"].values()} | {manifest["latest"]}
        excess = len(snapshots) - self.max_snapshots
        doomed = [s["file"] for s in snapshots if s["file"] not in protected][:excess]
        manifest["snapshots"] = [s for s in snapshots if s["file"] not in doomed]
        return doomed

    def _orphan_checkpoints(self) -> list[Path]:
        """Checkpoint files that match the template (newest epoch last) or the interrupt file."""
        if not self.directory.is_dir():
            return []
        pattern = _template_regex(self.filename_template, self.model_name)
        found = []
        for path in self.directory.iterdir():
            match = pattern.fullmatch(path.name)
            if match:
                found.append((int(match.group("epoch")), 0, path))
            elif path.name == self.interrupt_file:
                found.append((math.inf, 1, path))
        return [p for _, _, p in sorted(found, key=lambda t: (t[0], t[1]))]


# --------------------------------------------------------------------------- helpers


def _check_record(record: Any) -> None:
    """One model's manifest record: raises ValueError naming what is malformed."""
    if not isinstance(record, dict):
        raise ValueError(f"a model's record must be a JSON object, found {type(record).__name__}")
    for key, kind in (("snapshots", list), ("best", dict)):
        if not isinstance(record.get(key), kind):
            raise ValueError(f"'{key}' must be a JSON {kind.__name__}")
    if not all(isinstance(s, dict) and isinstance(s.get("file"), str) for s in record["snapshots"]):
        raise ValueError("every snapshot needs a 'file'")


def _write_atomic(path: Path, write: Callable[[IO], Any], *, binary: bool) -> Path:
    try:
        return atomic_write(path, write, binary=binary)
    except Exception as exc:
        raise CheckpointError.at(
            path, f"could not write the file ({type(exc).__name__}: {exc})",
            fix="check free disk space and write permission; the previous file is unchanged",
        ) from exc


def _torch_load(path: Path, map_location: Any) -> Any:
    if not path.exists():
        raise CheckpointError.at(path, "checkpoint file not found",
                                 fix="check the path (relative paths start at the config's folder)")
    if not path.is_file():
        raise CheckpointError.at(path, "checkpoint path is not a file",
                                 fix="give the .pth file itself")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip, pickle, EOF and weights_only errors all land here
        text = str(exc)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            reason = f"it stores a {found.group(1)} object" if found else _first_sentence(text)
            what = f"checkpoint holds objects other than tensors and plain values ({reason})"
            fix = "save only state dicts and plain values (torch.save(model.state_dict(), path))"
        else:
            reason = _first_sentence(text)
            reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
            if path.stat().st_size == 0:
                reason = "the file is empty"
            what = f"checkpoint is corrupt or truncated ({reason})"
            fix = "use another checkpoint (an earlier epoch or the best file)"
        raise CheckpointError.at(path, what, fix=fix) from exc


def _first_sentence(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0][:200]


def _strip_wrapper_prefixes(state: dict, model_keys: set[str]) -> dict:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not any(
            k.startswith(prefix) for k in model_keys
        ):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _describe_keys(data: Any) -> str:
    if isinstance(data, Mapping):
        keys = [str(k) for k in data]
        return f"a dict with keys {_short_list(keys)}" if keys else "an empty dict"
    return f"a {type(data).__name__}"


def _short_list(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(
            f"filename_template is not a valid format string (got {template!r}): {exc}"
        ) from exc


def _template_regex(template: str, model_name: str) -> re.Pattern:
    pieces = []
    for literal, field, _, _ in string.Formatter().parse(template):
        pieces.append(re.escape(literal))
        if field == "epoch":
            pieces.append(r"(?P<epoch>\d+)")
        elif field == "step":
            pieces.append(r"\d+")
        elif field == "model_name":
            pieces.append(re.escape(model_name))
    return re.compile("".join(pieces))


def _sanitise(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(metric)).strip("_.") or "metric"


def _json_float(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
