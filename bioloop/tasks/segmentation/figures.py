"""Pictures of a validation sample: raw, target and prediction for each class."""

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
