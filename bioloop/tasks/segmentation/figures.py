"""Pictures: a validation sample (raw, target and prediction per class) and, for `bioloop evaluate
--figure`, one slice of raw, truth and predicted instances side by side."""

from __future__ import annotations

import numpy as np


def _plane(t) -> np.ndarray:
    """A 2D view of a (y, x) or (z, y, x) array: the middle z-plane."""
    a = t.detach().float().cpu().numpy()
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def batch_figure(raw, target, probabilities, classes):
    """A grid with the raw input, then per class the target (grey = unannotated) and the prediction."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    image = _plane(raw[0])
    for row, name in enumerate(classes):
        truth = _plane(target[row])
        axes[row, 0].imshow(image, cmap="gray")
        axes[row, 0].set_title("raw")
        shown = np.where(np.isnan(truth), 0.5, truth)
        axes[row, 1].imshow(shown, cmap="gray", vmin=0, vmax=1)
        axes[row, 1].set_title(f"{name} target" + (" (unannotated)" if np.isnan(truth).all() else ""))
        axes[row, 2].imshow(_plane(probabilities[row]), cmap="magma", vmin=0, vmax=1)
        axes[row, 2].set_title(f"{name} prediction")
        for ax in axes[row]:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def instance_colours(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """(…, 3) float RGB: background 0 black, every id its own bright colour (fixed by id and seed)."""
    ids = np.asarray(ids)
    unique, inverse = np.unique(ids, return_inverse=True)
    palette = 0.25 + 0.75 * np.random.default_rng(seed).random((len(unique), 3))
    palette[unique == 0] = 0.0
    return palette[inverse.reshape(ids.shape)]


def evaluation_figure(panels: list[dict], title: str = ""):
    """One row per class: raw (when known), truth, prediction for one z-slice.

    Each panel dict: ``name``, ``z``, ``raw`` (2D array or None), ``truth`` (2D integer ids or 0/1),
    ``prediction`` (2D integer ids, or float probabilities), ``scores`` (text for the prediction title).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    columns = 3 if any(p["raw"] is not None for p in panels) else 2
    fig, axes = plt.subplots(len(panels), columns, figsize=(3.6 * columns, 3.6 * len(panels)), squeeze=False)
    for row, panel in enumerate(panels):
        cells = list(axes[row])
        if columns == 3:
            ax = cells.pop(0)
            if panel["raw"] is not None:
                ax.imshow(panel["raw"], cmap="gray")
            ax.set_title(f"raw (z = {panel['z']})")
        truth, pred = panel["truth"], panel["prediction"]
        cells[0].imshow(instance_colours(truth), interpolation="nearest")
        cells[0].set_title(f"{panel['name']} truth (objects: {len(np.unique(truth[truth > 0]))})")
        if np.asarray(pred).dtype.kind == "f":
            cells[1].imshow(pred, cmap="magma", vmin=0, vmax=1)
            cells[1].set_title(f"{panel['name']} probability")
        else:
            cells[1].imshow(instance_colours(pred, seed=1), interpolation="nearest")
            cells[1].set_title(f"{panel['name']} predicted (objects: {len(np.unique(pred[pred > 0]))})")
        if panel.get("scores"):
            cells[1].set_xlabel(panel["scores"])
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
