"""Lightning-Pose-style unsupervised losses on predicted keypoints of unlabeled video frames.

Losses (names as in the reference's ``losses`` section):

* ``temporal`` (``epsilon``, ``prob_threshold``): per-keypoint L2 jump between consecutive frames,
  hinge-rectified ``relu(jump - epsilon)``; a jump counts only when the keypoint's confidence is
  ``>= prob_threshold`` in both frames (otherwise it contributes 0).
* ``pca_singleview`` (``columns_for_singleview_pca``, ``components_to_keep``): a PCA of the
  labeled poses (x, y of the chosen keypoints, one row per frame); the loss is each keypoint's
  L2 reconstruction error after projecting the prediction onto the kept subspace.
* ``pca_multiview`` (``mirrored_column_matches``, ``components_to_keep`` default 3): views of
  one body part are columns of one CSV; each (frame, body part) gives a row of the 2*V stacked
  view coordinates, which for (affine) cameras lie in a 3-D subspace. Same reconstruction error.

PCA epsilon: when ``epsilon`` is None it is computed as in Lightning Pose, per keypoint, as the
``empirical_epsilon_percentile`` (default 99) percentile of the labeled data's own reconstruction
errors times ``empirical_epsilon_multiplier``; errors below it cost nothing (``relu(err - eps)``).
Every loss is averaged over all its elements (masked ones count as 0, as in Lightning Pose) and
multiplied by ``weight = 1 / (2 * exp(log_weight))`` (Lightning Pose's ``Loss.weight``).
``annealed_weight`` ramps a weight linearly from 0 over the warm-up epochs. Everything is
vectorised torch and runs on CPU; the PCA is fitted once with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np
import torch

from bioloop.errors import ConfigError, DataError

__all__ = ["PCAFit", "PCAMultiviewLoss", "PCASingleviewLoss", "TemporalLoss", "annealed_weight",
           "fit_pca", "format_multiview", "loss_weight"]


def loss_weight(log_weight: float) -> float:
    """Lightning Pose's weight of a loss term: ``1 / (2 * exp(log_weight))``."""
    return 1.0 / (2.0 * math.exp(float(log_weight)))


def annealed_weight(epoch: int | float, weight: float, warmup_epochs: int | float) -> float:
    """Linear warm-up: 0 at epoch 0, ``weight`` from ``warmup_epochs`` on (at once if <= 0)."""
    if warmup_epochs <= 0:
        return float(weight)
    return float(weight) * min(1.0, max(0.0, float(epoch) / float(warmup_epochs)))


def _as_points(where: str, keypoints) -> torch.Tensor:
    """(..., K, 2) tensor from (..., K, 2) or (B, 2K) input."""
    kp = torch.as_tensor(keypoints)
    if kp.ndim == 2 and kp.shape[-1] != 2 and kp.shape[-1] % 2 == 0:
        kp = kp.reshape(kp.shape[0], -1, 2)
    if kp.ndim < 2 or kp.shape[-1] != 2:
        raise DataError.at(where, "keypoints must have shape (..., K, 2) or (B, 2K)",
                           got=tuple(kp.shape), fix="pass (x, y) pixel coordinates per keypoint")
    return kp if kp.is_floating_point() else kp.float()


class _WeightedLoss(torch.nn.Module):
    def __init__(self, name: str, log_weight: float):
        super().__init__()
        self.name = name
        self.log_weight = float(log_weight)

    @property
    def weight(self) -> float:
        return loss_weight(self.log_weight)


class TemporalLoss(_WeightedLoss):
    """``temporal``: penalise jumps larger than ``epsilon`` pixels between consecutive frames.

    ``epsilon`` is a float or one value per keypoint. Call with keypoints ``(T, K, 2)`` (or
    ``(B, T, K, 2)``, time on dim -3) and optional confidences ``(T, K)`` / ``(B, T, K)``."""

    def __init__(self, epsilon: float | Sequence[float] = 0.0, prob_threshold: float = 0.0,
                 log_weight: float = 0.0):
        super().__init__("temporal", log_weight)
        eps = np.asarray(epsilon, dtype=np.float64)
        if eps.ndim > 1 or not np.all(np.isfinite(eps)) or np.any(eps < 0):
            raise ConfigError.at("losses.temporal.epsilon", "must be a number >= 0 or a list of "
                                 "them (one per keypoint)", got=epsilon, fix="e.g. epsilon = 20.0")
        if not 0.0 <= float(prob_threshold) <= 1.0:
            raise ConfigError.at("losses.temporal.prob_threshold", "must be in [0, 1]",
                                 got=prob_threshold, fix="e.g. prob_threshold = 0.05")
        self.register_buffer("epsilon", torch.as_tensor(eps, dtype=torch.float32))
        self.prob_threshold = float(prob_threshold)

    def elementwise(self, keypoints, confidences=None) -> torch.Tensor:
        """Rectified jumps ``(..., T-1, K)`` (0 where masked or NaN)."""
        kp = _as_points("losses.temporal: keypoints", keypoints)
        if kp.ndim < 3 or kp.shape[-3] < 2:
            raise DataError.at("losses.temporal: keypoints", "need at least 2 consecutive frames "
                               "on dim -3", got=tuple(kp.shape), fix="pass (T, K, 2) with T >= 2")
        if self.epsilon.ndim == 1 and self.epsilon.shape[0] != kp.shape[-2]:
            raise ConfigError.at("losses.temporal.epsilon", "needs one value per keypoint",
                                 got=self.epsilon.shape[0], fix=f"give {kp.shape[-2]} values")
        jump = torch.linalg.vector_norm(torch.diff(kp, dim=-3), dim=-1)
        loss = torch.relu(jump - self.epsilon.to(jump))
        keep = torch.isfinite(loss)
        if confidences is not None and self.prob_threshold > 0:
            conf = torch.as_tensor(confidences, device=loss.device)
            ok = conf >= self.prob_threshold
            keep = keep & ok[..., 1:, :] & ok[..., :-1, :]
        return torch.where(keep, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))

    def forward(self, keypoints, confidences=None, weighted: bool = True) -> torch.Tensor:
        loss = self.elementwise(keypoints, confidences).mean()
        return loss * self.weight if weighted else loss


@attrs.frozen(eq=False)
class PCAFit:
    """A PCA of keypoint rows: ``mean (D,)``, ``components (D, k)`` (orthonormal columns),
    ``explained_variance_ratio (D,)`` of all components; D = 2 * points per row."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.components.shape[1])

    def reprojection_error(self, rows: np.ndarray) -> np.ndarray:
        """Per-point L2 error ``(N, D/2)`` of rows ``(N, D)`` projected onto the subspace."""
        centred = rows - self.mean
        recon = centred @ self.components @ self.components.T
        return np.linalg.norm((centred - recon).reshape(len(rows), -1, 2), axis=-1)


def _n_components(where: str, components_to_keep, ratio: np.ndarray, dim: int) -> int:
    value = components_to_keep
    if isinstance(value, float) and value > 1.0 and value.is_integer():
        value = int(value)  # a count that went through a float-typed setting (3.0)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 1 <= value <= dim:
            return int(value)
    elif isinstance(value, float) and 0.0 < value <= 1.0:
        return int(min(dim, np.searchsorted(np.cumsum(ratio), value - 1e-12) + 1))
    raise ConfigError.at(where, "must be a count of components (int 1..%d) or a fraction of "
                         "explained variance in (0, 1]" % dim, got=value, fix="e.g. 0.99 or 3")


def fit_pca(rows_or_keypoints, columns: Sequence[int] | None = None,
            components_to_keep: int | float = 0.99,
            where: str = "losses.pca_singleview.components_to_keep") -> PCAFit:
    """Fit a PCA on keypoints ``(N, K, 2)`` (restricted to ``columns``) or on rows ``(N, D)``.

    Rows with any NaN are dropped. ``components_to_keep``: int = that many components; float
    in (0, 1] = the fewest components explaining at least that fraction of the variance."""
    arr = np.asarray(rows_or_keypoints, dtype=np.float64)
    if arr.ndim == 3:
        if columns is not None:
            arr = arr[:, list(columns)]
        arr = arr.reshape(len(arr), -1)
    rows = arr[np.all(np.isfinite(arr), axis=1)]
    if len(rows) < 2:
        raise DataError.at(where.rsplit(".", 1)[0], "too few fully labeled frames to fit the PCA",
                           got=len(rows), fix="label more frames with all PCA keypoints visible")
    mean = rows.mean(axis=0)
    _, s, vt = np.linalg.svd(rows - mean, full_matrices=True)
    var = np.zeros(rows.shape[1])
    var[: len(s)] = s**2
    ratio = var / var.sum() if var.sum() > 0 else np.full_like(var, 1.0 / len(var))
    k = _n_components(where, components_to_keep, ratio, rows.shape[1])
    return PCAFit(mean=mean, components=vt[:k].T.copy(), explained_variance_ratio=ratio)


def format_multiview(keypoints, mirrored_column_matches: Sequence[Sequence[int]]):
    """``(..., K, 2)`` -> rows ``(N * P, 2 * V)``: one row per frame and body part, holding that
    part's (x, y) in view 0, view 1, ... (``mirrored_column_matches`` = V lists of P columns)."""
    idx = list(map(list, mirrored_column_matches))  # (V, P)
    if isinstance(keypoints, torch.Tensor):
        kp = keypoints.reshape(-1, *keypoints.shape[-2:])[:, idx]  # (N, V, P, 2)
        return kp.permute(0, 2, 1, 3).reshape(-1, 2 * len(idx))
    kp = np.asarray(keypoints, dtype=np.float64)
    kp = kp.reshape(-1, *kp.shape[-2:])[:, idx]
    return kp.transpose(0, 2, 1, 3).reshape(-1, 2 * len(idx))


def _labeled(name: str, keypoints, fix: str) -> np.ndarray:
    """Labeled keypoints (N, K, 2) as float64, or a DataError naming the loss."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise DataError.at(f"losses.{name}: labeled keypoints", "must have shape (N, K, 2)", got=kp.shape, fix=fix)
    return kp


class _PCALoss(_WeightedLoss):
    """Shared PCA reconstruction loss; subclasses turn keypoints into PCA rows with ``_rows``."""

    def __init__(self, name: str, fit: PCAFit, labeled_rows: np.ndarray, epsilon,
                 empirical_epsilon_percentile: float, empirical_epsilon_multiplier: float,
                 log_weight: float):
        super().__init__(name, log_weight)
        self.fit = fit
        if epsilon is None:
            if not 0.0 <= float(empirical_epsilon_percentile) <= 100.0:
                raise ConfigError.at(f"losses.{name}.empirical_epsilon_percentile",
                                     "must be in [0, 100]", got=empirical_epsilon_percentile,
                                     fix="e.g. 99")
            rows = labeled_rows[np.all(np.isfinite(labeled_rows), axis=1)]
            err = fit.reprojection_error(rows)
            eps = np.percentile(err, float(empirical_epsilon_percentile), axis=0)
            eps = eps * float(empirical_epsilon_multiplier)
        else:
            eps = np.asarray(epsilon, dtype=np.float64)
            if eps.ndim > 1 or not np.all(np.isfinite(eps)) or np.any(eps < 0):
                raise ConfigError.at(f"losses.{name}.epsilon", "must be null, a number >= 0 or "
                                     "one per point", got=epsilon, fix="use null to estimate it")
        self.register_buffer("epsilon", torch.as_tensor(eps, dtype=torch.float32))
        self.register_buffer("mean", torch.as_tensor(fit.mean, dtype=torch.float32))
        self.register_buffer("components", torch.as_tensor(fit.components, dtype=torch.float32))

    def elementwise(self, keypoints) -> torch.Tensor:
        """Rectified per-point reconstruction errors ``(rows, D/2)`` (0 for rows with NaN)."""
        rows = self._rows(keypoints)
        mean, comp = self.mean.to(rows), self.components.to(rows)
        centred = rows - mean
        resid = centred - centred @ comp @ comp.T
        err = torch.linalg.vector_norm(resid.reshape(len(rows), -1, 2), dim=-1)
        loss = torch.relu(err - self.epsilon.to(err))
        return torch.where(torch.isfinite(loss), loss, torch.zeros((), dtype=loss.dtype,
                                                                   device=loss.device))

    def forward(self, keypoints, weighted: bool = True) -> torch.Tensor:
        loss = self.elementwise(keypoints).mean()
        return loss * self.weight if weighted else loss


class PCASingleviewLoss(_PCALoss):
    """``pca_singleview``: distance of predicted poses from the labeled poses' PCA subspace.

    ``labeled_keypoints (N, K, 2)``; ``columns_for_singleview_pca`` = keypoint indices (None =
    all). Call with predictions ``(..., K, 2)``; the loss averages over frames and PCA points."""

    def __init__(self, labeled_keypoints, columns_for_singleview_pca: Sequence[int] | None = None,
                 components_to_keep: int | float = 0.99, epsilon=None,
                 empirical_epsilon_percentile: float = 99.0,
                 empirical_epsilon_multiplier: float = 1.0, log_weight: float = 0.0):
        kp = _labeled("pca_singleview", labeled_keypoints, "pass one animal's labels")
        cols = list(range(kp.shape[1])) if columns_for_singleview_pca is None \
            else [int(c) for c in columns_for_singleview_pca]
        bad = [c for c in cols if not 0 <= c < kp.shape[1]]
        if bad or len(cols) < 2 or len(set(cols)) != len(cols):
            raise ConfigError.at("data.columns_for_singleview_pca", "needs >= 2 distinct keypoint "
                                 f"indices in 0..{kp.shape[1] - 1}", got=columns_for_singleview_pca,
                                 fix="list the indices of keypoints visible in most frames")
        self.columns = cols
        rows = kp[:, cols].reshape(len(kp), -1)
        fit = fit_pca(rows, components_to_keep=components_to_keep,
                      where="losses.pca_singleview.components_to_keep")
        super().__init__("pca_singleview", fit, rows, epsilon, empirical_epsilon_percentile,
                         empirical_epsilon_multiplier, log_weight)

    def _rows(self, keypoints) -> torch.Tensor:
        kp = _as_points("losses.pca_singleview: keypoints", keypoints)
        kp = kp[..., self.columns, :]
        return kp.reshape(-1, 2 * len(self.columns))


class PCAMultiviewLoss(_PCALoss):
    """``pca_multiview``: inconsistency between views of the same body parts.

    ``mirrored_column_matches``: V >= 2 lists of equal length P; entry p of list v is the keypoint
    column of body part p in view v. Call with predictions ``(..., K, 2)``."""

    def __init__(self, labeled_keypoints, mirrored_column_matches: Sequence[Sequence[int]],
                 components_to_keep: int | float = 3, epsilon=None,
                 empirical_epsilon_percentile: float = 99.0,
                 empirical_epsilon_multiplier: float = 1.0, log_weight: float = 0.0):
        kp = _labeled("pca_multiview", labeled_keypoints, "pass the labels of all views")
        self.matches = _check_matches(mirrored_column_matches, kp.shape[1])
        rows = format_multiview(kp, self.matches)
        fit = fit_pca(rows, components_to_keep=components_to_keep,
                      where="losses.pca_multiview.components_to_keep")
        super().__init__("pca_multiview", fit, rows, epsilon, empirical_epsilon_percentile,
                         empirical_epsilon_multiplier, log_weight)

    def _rows(self, keypoints) -> torch.Tensor:
        return format_multiview(_as_points("losses.pca_multiview: keypoints", keypoints),
                                self.matches)


def _check_matches(matches, n_keypoints: int) -> list[list[int]]:
    where = "data.mirrored_column_matches"
    fix = "give one list of keypoint columns per view, all the same length, e.g. [[0, 1], [2, 3]]"
    try:
        out = [[int(c) for c in view] for view in matches]
    except TypeError:
        raise ConfigError.at(where, "must be a list of lists of keypoint indices", got=matches,
                             fix=fix) from None
    if len(out) < 2 or len({len(v) for v in out}) != 1 or not out[0]:
        raise ConfigError.at(where, "needs >= 2 views with the same number of columns",
                             got=matches, fix=fix)
    flat = [c for v in out for c in v]
    if any(not 0 <= c < n_keypoints for c in flat):
        raise ConfigError.at(where, f"column index outside 0..{n_keypoints - 1}", got=matches,
                             fix=fix)
    return out
