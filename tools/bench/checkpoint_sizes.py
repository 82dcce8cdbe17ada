"""Disk cost of one checkpoint per task: full, ``save_optimizer_state = False``, and the weights-only export.

    python tools/bench/checkpoint_sizes.py [TEMPLATE ...]   # default: every packaged example

For each example config (``bioloop init`` templates) it builds the model and the optimizer the config
asks for, takes one optimizer step on a dummy loss (so Adam-type optimizers hold their per-parameter
moments, as in any saved epoch) and measures the bytes ``torch.save`` writes for the training state
with and without the optimizer's per-parameter state, and for the model weights alone. Prints MiB and
the ratio of each to the full checkpoint. RNG, config and sampler records are a few KiB and are left
out of all three columns.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _size(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


def measure(template: Path) -> tuple[str, int, int, int, int]:
    from bioloop import api
    from bioloop.engine.optim import build_optimizer
    from bioloop.tasks import get_task

    cfg = api.load_config(str(template))
    model = get_task(cfg.task).build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(cfg.optimizer, params, learning_rate=cfg.learning_rate, where=template.name)
    sum((p.float() ** 2).sum() for p in params).backward()
    opt.step()
    full = opt.state_dict()
    lean = {"state": {}, "param_groups": full["param_groups"]}
    weights = model.state_dict()
    n_params = sum(p.numel() for p in model.parameters())
    return (f"{template.stem} ({cfg.task}, {type(opt).__name__})", n_params, _size({"model": weights, "optimizer": full}),
            _size({"model": weights, "optimizer": lean}), _size({"model": weights}))


def main() -> None:
    root = Path(__file__).resolve().parents[2] / "bioloop" / "examples"
    names = sys.argv[1:] or sorted(p.stem for p in root.glob("*.py"))
    print("| example (task, optimizer) | parameters | full MiB | save_optimizer_state=False MiB (ratio) "
          "| best_weights MiB (ratio) |")
    print("|---|---|---|---|---|")
    mib = 2 ** 20
    for name in names:
        try:
            label, n, full, lean, weights = measure(root / f"{name}.py")
        except Exception as exc:  # noqa: BLE001 - a template that needs its data to build is reported
            print(f"| {name} | not measured: {type(exc).__name__}: {str(exc)[:80]} | | | |")
            continue
        print(f"| {label} | {n / 1e6:.1f} M | {full / mib:.1f} | {lean / mib:.1f} ({lean / full:.2f}) | "
              f"{weights / mib:.1f} ({weights / full:.2f}) |")


if __name__ == "__main__":
    main()
