"""Generate the datasplit CSV at training start when it does not exist (csc behaviour)."""

from __future__ import annotations

from pathlib import Path

from bioloop.errors import DataError


def ensure_datasplit(cfg, *, say=print) -> None:
    """Write ``cfg.datasplit_path`` from the ``datasplit`` section when the file is missing.

    Generation is deterministic (``random_seed``) and the write atomic, so several processes of a
    DDP run may all do it and agree.
    """
    path = Path(cfg.datasplit_path)
    if path.exists() or cfg.datasplit is None:
        return
    from bioloop.data.datasplit_gen import make_datasplit, summarize

    spec = cfg.datasplit
    try:
        entries = make_datasplit(
            search_path=spec.search_path, classes=list(cfg.classes), raw_name=spec.raw_name,
            crop_name=spec.crop_name, validation_prob=cfg.validation_prob, random_seed=cfg.random_seed,
            force_all_classes=spec.force_all_classes, filter_by_scale=spec.filter_by_scale,
            datasets=list(spec.datasets), crops=list(spec.crops), csv_path=str(path),
            storage_options=cfg.storage_options or None, layout=spec.layout)
    except DataError as exc:
        source = cfg.source.name if cfg.source else "config"
        raise DataError(f"{source}: datasplit: could not generate {path}: {exc}") from exc
    say(f"wrote datasplit {path}\n{summarize(entries)}")
