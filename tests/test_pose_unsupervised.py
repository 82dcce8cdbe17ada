"""Unsupervised pose losses: temporal, single-view PCA, multi-view PCA, weights and annealing."""

import math

import numpy as np
import pytest
import torch

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.pose.unsupervised import (PCAMultiviewLoss, PCASingleviewLoss, TemporalLoss,
                                             annealed_weight, fit_pca, format_multiview,
                                             loss_weight)

# keypoint 0 jumps 5 px (3-4-5 triangle) then rests; keypoint 1 rests then jumps 12 px
TRAJ = torch.tensor([[[0.0, 0.0], [10.0, 10.0]],
                     [[3.0, 4.0], [10.0, 10.0]],
                     [[3.0, 4.0], [10.0, 22.0]]])


def test_weight_and_annealing():
    assert loss_weight(0.0) == 0.5
    assert loss_weight(math.log(2.0)) == pytest.approx(0.25)
    assert annealed_weight(0, 2.0, 10) == 0.0
    assert annealed_weight(5, 2.0, 10) == pytest.approx(1.0)
    assert annealed_weight(10, 2.0, 10) == 2.0 and annealed_weight(30, 2.0, 10) == 2.0
    assert annealed_weight(0, 2.0, 0) == 2.0


def test_temporal_loss_golden():
    loss = TemporalLoss(epsilon=2.0)
    # jumps [[5, 0], [0, 12]] -> relu(jump - 2) = [[3, 0], [0, 10]]
    np.testing.assert_allclose(loss.elementwise(TRAJ).numpy(), [[3, 0], [0, 10]])
    assert loss(TRAJ, weighted=False).item() == pytest.approx(13 / 4)
    assert loss(TRAJ).item() == pytest.approx(13 / 4 * 0.5)  # log_weight 0 -> weight 1/2
    assert TemporalLoss(epsilon=2.0, log_weight=math.log(2.0))(TRAJ).item() == \
        pytest.approx(13 / 4 / 4)
    # flat (T, 2K) input and a batch dimension give the same
    assert loss(TRAJ.reshape(3, 4)).item() == pytest.approx(13 / 8)
    assert loss(TRAJ[None].repeat(2, 1, 1, 1)).item() == pytest.approx(13 / 8)
    # per-keypoint epsilon
    assert TemporalLoss(epsilon=[0.0, 20.0])(TRAJ, weighted=False).item() == pytest.approx(5 / 4)


def test_temporal_loss_ignores_low_confidence():
    conf = torch.tensor([[0.9, 0.9], [0.9, 0.9], [0.9, 0.01]])  # keypoint 1 unsure in frame 2
    loss = TemporalLoss(epsilon=2.0, prob_threshold=0.05)
    np.testing.assert_allclose(loss.elementwise(TRAJ, conf).numpy(), [[3, 0], [0, 0]])
    assert loss(TRAJ, conf, weighted=False).item() == pytest.approx(3 / 4)
    nan = TRAJ.clone()
    nan[2, 1] = float("nan")
    assert loss(nan, weighted=False).item() == pytest.approx(3 / 4)


def test_temporal_loss_gradient_flows():
    kp = TRAJ.clone().requires_grad_(True)
    TemporalLoss(epsilon=2.0)(kp).backward()
    assert kp.grad is not None and kp.grad.abs().sum() > 0


def test_temporal_loss_errors():
    with pytest.raises(ConfigError, match="losses.temporal.epsilon"):
        TemporalLoss(epsilon=-1.0)
    with pytest.raises(ConfigError, match="losses.temporal.prob_threshold: must be in"):
        TemporalLoss(prob_threshold=1.5)
    with pytest.raises(DataError, match="need at least 2 consecutive frames"):
        TemporalLoss()(TRAJ[:1])
    with pytest.raises(ConfigError, match="needs one value per keypoint"):
        TemporalLoss(epsilon=[1.0, 2.0, 3.0])(TRAJ)
    with pytest.raises(DataError, match="keypoints must have shape"):
        TemporalLoss()(torch.zeros(3, 2, 3))


def _singleview_labels(n=50, seed=0):
    """Keypoint 0 moves freely, keypoint 1 stays at (10, 20), keypoint 2 = keypoint 0 + (5, 0)."""
    rng = np.random.default_rng(seed)
    kp = np.zeros((n, 3, 2))
    kp[:, 0] = rng.uniform(0, 50, (n, 2))
    kp[:, 1] = (10.0, 20.0)
    kp[:, 2] = kp[:, 0] + (5.0, 0.0)
    return kp


def test_fit_pca_components_by_fraction_or_count():
    kp = _singleview_labels()
    fit = fit_pca(kp, components_to_keep=0.99)
    assert fit.n_components == 2  # two degrees of freedom in six coordinates
    np.testing.assert_allclose(fit.explained_variance_ratio[:2].sum(), 1.0)
    assert fit_pca(kp, components_to_keep=1).n_components == 1
    assert fit_pca(kp, components_to_keep=3.0).n_components == 3  # a count given as float
    assert fit_pca(kp, columns=[0, 1], components_to_keep=0.99).components.shape == (4, 2)
    with pytest.raises(ConfigError, match="components_to_keep: must be a count"):
        fit_pca(kp, components_to_keep=1.5)
    with pytest.raises(ConfigError, match="components_to_keep: must be a count"):
        fit_pca(kp, components_to_keep=7)
    with pytest.raises(DataError, match="too few fully labeled frames"):
        fit_pca(np.full((5, 3, 2), np.nan))


def test_pca_singleview_zero_in_subspace_positive_off_it():
    kp = _singleview_labels()
    loss = PCASingleviewLoss(kp, components_to_keep=0.99)
    assert float(loss.epsilon.max()) < 1e-6  # labels lie exactly in the subspace
    new = torch.tensor(_singleview_labels(8, seed=1), dtype=torch.float32)
    assert loss(new).item() == pytest.approx(0.0, abs=1e-4)
    # golden: move keypoint 1 by (3, 4); projection restores it and splits nothing else
    off = new.clone()
    off[:, 1] += torch.tensor([3.0, 4.0])
    errs = loss.elementwise(off)
    np.testing.assert_allclose(errs[:, 1].numpy(), 5.0, atol=1e-3)
    np.testing.assert_allclose(errs[:, [0, 2]].numpy(), 0.0, atol=1e-3)
    assert loss(off, weighted=False).item() == pytest.approx(5 / 3, abs=1e-3)
    fixed_eps = PCASingleviewLoss(kp, components_to_keep=2, epsilon=1.0, log_weight=0.0)
    assert fixed_eps(off).item() == pytest.approx((5 - 1) / 3 * 0.5, abs=1e-3)


def test_pca_singleview_columns_and_errors():
    kp = _singleview_labels()
    loss = PCASingleviewLoss(kp, columns_for_singleview_pca=[0, 2], components_to_keep=2)
    moved = torch.tensor(kp[:4], dtype=torch.float32)
    moved[:, 1] += 100.0  # not a PCA column: ignored
    assert loss(moved).item() == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ConfigError, match="data.columns_for_singleview_pca"):
        PCASingleviewLoss(kp, columns_for_singleview_pca=[0, 5])
    with pytest.raises(ConfigError, match="losses.pca_singleview.epsilon"):
        PCASingleviewLoss(kp, epsilon=-2.0)
    with pytest.raises(DataError, match="must have shape"):
        PCASingleviewLoss(kp[:, :, 0])


def _two_views(n, seed):
    """Body parts of a 3-D point cloud seen by two affine cameras; columns 0..P-1 = view 0."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(0, 10, (n, 4, 3))  # n frames, P = 4 body parts
    cams = [(np.array([[1.0, 0.2, 0.0], [0.0, 0.9, 0.3]]), np.array([32.0, 24.0])),
            (np.array([[0.1, 0.0, 1.1], [0.3, 1.0, -0.2]]), np.array([100.0, 24.0]))]
    views = [pts @ m.T + o for m, o in cams]
    return np.concatenate(views, axis=1)  # (n, 8, 2)


MATCHES = [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_format_multiview_layout():
    kp = np.arange(2 * 8 * 2, dtype=float).reshape(2, 8, 2)
    rows = format_multiview(kp, MATCHES)
    assert rows.shape == (8, 4)
    np.testing.assert_array_equal(rows[1], np.r_[kp[0, 1], kp[0, 5]])
    np.testing.assert_array_equal(format_multiview(torch.tensor(kp), MATCHES).numpy(), rows)


def test_pca_multiview_consistent_vs_inconsistent():
    loss = PCAMultiviewLoss(_two_views(40, 0), MATCHES)  # components_to_keep = 3 (3-D)
    assert loss.fit.n_components == 3
    good = torch.tensor(_two_views(6, 1), dtype=torch.float32)
    assert loss(good, weighted=False).item() == pytest.approx(0.0, abs=1e-3)
    bad = good.clone()
    bad[:, 5, 0] += 8.0  # body part 1 shifted in view 1 only
    errs = loss.elementwise(bad).reshape(6, 4, 2)
    assert float(errs[:, 1].min()) > 1.0  # both views of that part are off the subspace
    np.testing.assert_allclose(errs[:, [0, 2, 3]].numpy(), 0.0, atol=1e-3)
    assert loss(bad).item() > 0.1


def test_pca_multiview_errors():
    kp = _two_views(10, 0)
    with pytest.raises(ConfigError, match="needs >= 2 views with the same number"):
        PCAMultiviewLoss(kp, [[0, 1, 2, 3], [4, 5]])
    with pytest.raises(ConfigError, match="column index outside 0..7"):
        PCAMultiviewLoss(kp, [[0, 1], [8, 9]])
    with pytest.raises(ConfigError, match="must be a list of lists"):
        PCAMultiviewLoss(kp, [0, 1])
