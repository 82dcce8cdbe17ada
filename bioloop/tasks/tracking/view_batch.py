"""Pictures of tracking clips: each frame's instance crops labelled with their track ids (matplotlib).

``render_clip(clip, num_frames, pred_ids=None)``: a grid with one row per frame (the first
``num_frames`` frames that have instances) and one crop per instance, titled ``id 3`` or, with
predictions, ``gt 3 / pred 1`` (red when they disagree with the first match of that GT id).
``write_view_batch(cfg, dataset, logger)`` renders the first training clip to
``<run_dir>/view_batch.png`` and to the run's TensorBoard (``view_batch`` settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _image(crop: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An RGB (first anchor's 3 channels) or grey picture of one (C, h, w) crop."""
    if crop.shape[0] >= 3 and crop.shape[0] % 3 == 0:
        return np.clip(crop[:3].transpose(1, 2, 0), 0, 1), None
    return crop[0], "gray"


def render_clip(clip: dict[str, Any], num_frames: int = 4, pred_ids: np.ndarray | None = None):
    """A matplotlib figure of the clip's crops (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crops = clip["crops"].float().cpu().numpy() if hasattr(clip["crops"], "cpu") else np.asarray(clip["crops"])
    frames = np.asarray(clip["frames"].cpu() if hasattr(clip["frames"], "cpu") else clip["frames"])
    ids = np.asarray(clip["ids"].cpu() if hasattr(clip["ids"], "cpu") else clip["ids"])
    shown = list(dict.fromkeys(frames.tolist()))[: max(1, int(num_frames))]
    cols = max([int((frames == t).sum()) for t in shown] + [1])
    fig, axes = plt.subplots(max(len(shown), 1), cols, figsize=(1.4 * cols, 1.5 * max(len(shown), 1)),
                             squeeze=False)
    first_pred: dict[int, int] = {}
    for row, t in enumerate(shown):
        for col, k in enumerate(np.flatnonzero(frames == t)):
            ax = axes[row, col]
            img, cmap = _image(crops[k])
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            if pred_ids is None:
                ax.set_title(f"id {int(ids[k])}", fontsize=7)
            else:
                p = int(pred_ids[k])
                ok = first_pred.setdefault(int(ids[k]), p) == p
                ax.set_title(f"gt {int(ids[k])} / pred {p}", fontsize=7, color="black" if ok else "red")
        axes[row, 0].set_ylabel(f"frame {t}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def write_view_batch(cfg, dataset, logger=None) -> Path:
    """Render the first clip of ``dataset`` (as training draws it) to PNG and to ``logger`` (a RunLogger)."""
    item = dataset[(0, cfg.random_seed)] if getattr(dataset, "train", False) else dataset[0]
    fig = render_clip(item, cfg.view_batch.num_frames)
    path = Path(cfg.run_dir) / "view_batch.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    if logger is not None:
        logger.figure("view_batch", fig, step=0)
    else:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
