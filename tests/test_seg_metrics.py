"""Semantic segmentation metrics on hand-made 4x4 masks with hand-checked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from bioloop.tasks.segmentation.metrics import (confusion_counts, format_table,
                                                scores_from_counts)

NAN = float("nan")
CLASSES = ["mito", "er", "nuc", "ves"]

# mito: TP 3 (top-left corner), FP 1 at (0, 2), FN 1 at (1, 1)
MITO_TRUTH = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
MITO_PRED = [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
# er: last row not annotated (its predictions never count): TP 1, FP 0, FN 1
ER_TRUTH = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [NAN, NAN, NAN, NAN]]
ER_PRED = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1]]
# nuc: absent from truth and prediction -> IoU/Dice undefined
ZERO = [[0] * 4 for _ in range(4)]
# ves: 2 true voxels, none predicted: TP 0, FP 0, FN 2
VES_TRUTH = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]


def _volumes():
    truth = torch.tensor([[MITO_TRUTH, ER_TRUTH, ZERO, VES_TRUTH]], dtype=torch.float32)
    pred = torch.tensor([[MITO_PRED, ER_PRED, ZERO, ZERO]], dtype=torch.float32)
    logits = torch.where(pred > 0, 4.0, -4.0)
    return logits, truth


def test_confusion_counts_by_hand():
    logits, truth = _volumes()
    counts = confusion_counts(logits, truth)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [[3, 1, 1], [1, 0, 1], [0, 0, 0], [0, 0, 2]]


def test_scores_by_hand():
    logits, truth = _volumes()
    s = scores_from_counts(confusion_counts(logits, truth), CLASSES)
    assert s["iou/mito"] == pytest.approx(3 / 5)
    assert s["dice/mito"] == pytest.approx(6 / 8)
    assert s["precision/mito"] == pytest.approx(3 / 4)
    assert s["recall/mito"] == pytest.approx(3 / 4)
    assert s["iou/er"] == pytest.approx(1 / 2)
    assert s["dice/er"] == pytest.approx(2 / 3)
    assert s["precision/er"] == 1.0 and s["recall/er"] == 0.5
    for key in ("iou", "dice", "precision", "recall"):
        assert math.isnan(s[f"{key}/nuc"])
    assert s["iou/ves"] == 0.0 and s["dice/ves"] == 0.0 and s["recall/ves"] == 0.0
    assert math.isnan(s["precision/ves"])  # nothing predicted
    # means over the defined classes only (nuc left out)
    assert s["iou_mean"] == pytest.approx((0.6 + 0.5 + 0.0) / 3)
    assert s["dice_mean"] == pytest.approx((0.75 + 2 / 3 + 0.0) / 3)
    assert set(s) == {f"{k}/{c}" for k in ("iou", "dice", "precision", "recall")
                      for c in CLASSES} | {"iou_mean", "dice_mean"}
    assert all(type(v) is float for v in s.values())


def test_means_are_nan_when_no_class_is_defined():
    s = scores_from_counts(torch.zeros(2, 3, dtype=torch.int64), ["a", "b"])
    assert math.isnan(s["iou_mean"]) and math.isnan(s["dice_mean"])


def test_threshold_is_strict_and_probabilities_work():
    logits = torch.tensor([[[0.0, 0.1, -0.1]]])  # (B=1, C=1, 3)
    truth = torch.ones(1, 1, 3)
    # sigmoid(0) = 0.5 is not > 0.5
    assert confusion_counts(logits, truth).tolist() == [[1, 0, 2]]
    probs = torch.tensor([[[0.5, 0.7, 0.9]]])
    assert confusion_counts(probs, truth, from_logits=False).tolist() == [[2, 0, 1]]
    assert confusion_counts(probs, truth, threshold=0.8, from_logits=False).tolist() == [[1, 0, 2]]


def test_counts_pool_over_batches_and_3d():
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 3, 5, 6)
    truth = (torch.rand(4, 2, 3, 5, 6) > 0.5).float()
    truth[torch.rand_like(truth) > 0.8] = NAN
    whole = confusion_counts(logits, truth)
    parts = confusion_counts(logits[:1], truth[:1]) + confusion_counts(logits[1:], truth[1:])
    assert torch.equal(whole, parts)
    valid = ~torch.isnan(truth)
    assert whole.sum().item() <= valid.sum().item()
    # TP + FN is the number of annotated positives per class
    positives = ((truth == 1) & valid).transpose(0, 1).reshape(2, -1).sum(1)
    assert torch.equal(whole[:, 0] + whole[:, 2], positives)


def test_all_nan_target_counts_nothing():
    counts = confusion_counts(torch.ones(1, 2, 4, 4), torch.full((1, 2, 4, 4), NAN))
    assert counts.tolist() == [[0, 0, 0], [0, 0, 0]]


def test_format_table():
    logits, truth = _volumes()
    s = scores_from_counts(confusion_counts(logits, truth), CLASSES)
    table = format_table(s, CLASSES)
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "Dice", "precision", "recall"]
    assert lines[2].split() == ["mito", "0.6000", "0.7500", "0.7500", "0.7500"]
    assert lines[3].split() == ["er", "0.5000", "0.6667", "1.0000", "0.5000"]
    assert lines[4].split() == ["nuc", "-", "-", "-", "-"]
    assert lines[5].split() == ["ves", "0.0000", "0.0000", "-", "0.0000"]
    assert lines[-1].split() == ["mean", "0.3667", "0.4722"]


def test_input_errors():
    with pytest.raises(ValueError, match=r"predictions and targets must both be shaped \(B, C, "
                                         r"\*spatial\) \(got \(1, 2, 4\) and \(1, 3, 4\)\)"):
        confusion_counts(torch.zeros(1, 2, 4), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\] \(got 1.5\)"):
        confusion_counts(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), threshold=1.5)
    with pytest.raises(ValueError, match=r"counts must be shaped \(2, 3\) for classes "
                                         r"\['a', 'b'\] \(got \(3, 3\)\)"):
        scores_from_counts(torch.zeros(3, 3), ["a", "b"])
