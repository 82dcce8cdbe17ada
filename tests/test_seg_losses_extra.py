"""Cost-map weights, softmax cross-entropy, the Allen auxiliary loss, "balanced" class weights.

Hand values: BCE-with-logits is log(1 + e^x) - x y, so with x in {0, ln 3, -ln 3}:
  x=0, y=1 -> ln 2;  x=ln 3, y=1 -> ln(4/3);  x=-ln 3, y=0 -> ln(4/3);  x=ln 3, y=0 -> ln 4.
Softmax over 2 classes with logit margin m for the true class: loss = ln(1 + e^-m), so
  m=0 -> ln 2;  m=ln 3 -> ln(4/3);  m=-ln 3 -> ln 4;  m=1 -> ln(1 + 1/e) = 0.313262.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.segmentation.losses import (AuxLoss, BCEDiceLoss, DiceLoss, MaskedLoss,
                                               SoftmaxCrossEntropyLoss, activation_for,
                                               balanced_class_weights, build_criterion,
                                               main_output, masked_mean)

NAN = float("nan")
LN2, LN3, LN4, LN43 = math.log(2), math.log(3), math.log(4), math.log(4 / 3)
WHERE = "cfg.py: criterion"


def _t(values, shape, grad=False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(shape).requires_grad_(grad)


def _build(criterion=None, kwargs=None, num_classes=1, **options):
    return build_criterion(criterion, kwargs or {}, where=WHERE, num_classes=num_classes,
                           **options)


def _one_hot(classes, channels=2) -> torch.Tensor:
    """(1, C, 1, N) one-hot target from a list of class indices; None -> NaN, -1 -> all 0."""
    t = torch.zeros(1, channels, 1, len(classes))
    for i, c in enumerate(classes):
        if c is None:
            t[0, :, 0, i] = NAN
        elif c >= 0:
            t[0, c, 0, i] = 1.0
    return t


def _two_class_logits(margins, classes, grad=True) -> torch.Tensor:
    """(1, 2, 1, N) logits whose true class (0 for -1/None) leads by ``margin``."""
    x = torch.zeros(1, 2, 1, len(margins))
    for i, (m, c) in enumerate(zip(margins, classes)):
        x[0, c if c is not None and c >= 0 else 0, 0, i] = m
    return x.requires_grad_(grad)


# ------------------------------------------------------------------- cost map weights


def test_masked_mean_with_a_cost_map_by_hand():
    x = _t([0.0, LN3, -LN3, LN3], (1, 1, 2, 2), grad=True)
    y = _t([1, 1, 0, 0], (1, 1, 2, 2))
    cost = _t([2, 1, 0, 1], (1, 1, 2, 2))
    loss = _build()(x, y, weight=cost)
    expected = (2 * LN2 + LN43 + 0 + LN4) / (2 + 1 + 0 + 1)  # 0.765068
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.765068, abs=1e-6)
    loss.backward()
    assert x.grad[0, 0, 1, 0] == 0  # cost 0: no gradient
    assert x.grad[0, 0, 0, 0] == pytest.approx(2 * (0.5 - 1) / 4)
    # NaN targets stay out even where the cost is high; NaN costs count as 0
    y_nan = _t([1, 1, 0, NAN], (1, 1, 2, 2))
    cost_nan = _t([2, 1, NAN, 9], (1, 1, 2, 2))
    assert _build()(x, y_nan, weight=cost_nan).item() == pytest.approx((2 * LN2 + LN43) / 3)


def test_cost_map_broadcasts_over_classes_and_combines_with_class_weights():
    # class 0: [ln 2, ln(4/3)], class 1: [ln 4, ln 2]; cost [3, 1]; class weights [1, 2]
    x = _t([0.0, LN3, LN3, 0.0], (1, 2, 1, 2))
    y = _t([1, 1, 0, 1], (1, 2, 1, 2))
    cost = _t([3, 1], (1, 1, 1, 2))
    loss = _build(None, {"weight_loss": [1, 2]}, num_classes=2)(x, y, cost)
    expected = (3 * LN2 + LN43 + 2 * 3 * LN4 + 2 * LN2) / (3 + 1 + 6 + 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    valid = torch.ones(1, 2, 1, 2, dtype=torch.bool)
    direct = masked_mean(F.binary_cross_entropy_with_logits(x, y, reduction="none"), valid,
                         torch.tensor([1.0, 2.0]), cost)
    assert direct.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_dice_and_bce_dice_by_hand():
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)  # p = 0.5 everywhere
    y = _t([1, 1, 0, 0], (1, 1, 2, 2))
    cost = _t([3, 1, 1, 1], (1, 1, 2, 2))
    # sum(w p t) = 2, sum(w p) = 3, sum(w t) = 4 -> dice 4/7
    assert DiceLoss(smooth=0)(x, y, cost).item() == pytest.approx(3 / 7)
    assert DiceLoss(smooth=0)(x, y, torch.ones(1, 1, 2, 2)).item() == pytest.approx(0.5)
    bce_dice = _build("bce_dice", {"smooth": 0})(x, y, weight=cost)
    assert bce_dice.item() == pytest.approx(LN2 + 3 / 7)
    assert isinstance(_build("bce_dice"), BCEDiceLoss)


def test_plain_losses_score_the_main_output_of_a_list():
    main = _t([0.0, LN3, -LN3, LN3], (1, 1, 2, 2), grad=True)
    aux = torch.full((1, 1, 2, 2), 9.0, requires_grad=True)
    y = _t([1, 1, 0, 0], (1, 1, 2, 2))
    for name in (None, "dice", "bce_dice"):
        crit = _build(name)
        assert crit([main, aux, aux], y).item() == pytest.approx(crit(main, y).item()), name
    assert main_output((main, aux)) is main and main_output(main) is main


def test_custom_criterion_with_a_cost_map():
    seen = {}

    def with_weight(output, target, weight=None):
        seen["weight"] = weight
        return output.sum() * 0

    crit = _build(with_weight, has_cost_map=True)
    cost = torch.ones(1, 1, 1, 1)
    crit(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), weight=cost)
    assert seen["weight"] is cost
    crit(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))  # no cost: called without it
    assert seen["weight"] is None

    class Module(nn.Module):
        def forward(self, output, target):
            return output.sum()

    assert isinstance(_build(Module()), Module)  # fine without cost maps
    assert isinstance(_build("MSELoss", has_cost_map=True), MaskedLoss)


# ------------------------------------------------------------------ softmax cross-entropy


def test_cross_entropy_two_voxels_matches_torch_and_hand():
    x = _two_class_logits([1.0, 0.0], [1, 0])
    y = _one_hot([1, 0])
    crit = _build("cross_entropy", num_classes=2)
    assert isinstance(crit, SoftmaxCrossEntropyLoss)
    loss = crit(x, y)
    expected = (math.log(1 + math.exp(-1)) + LN2) / 2  # 0.503204
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.503204, abs=1e-6)
    idx = torch.tensor([[[1, 0]]])
    assert loss.item() == pytest.approx(F.cross_entropy(x, idx).item(), rel=1e-6)
    for kwargs, torch_kwargs in [({"weight_loss": [1, 3]}, {"weight": torch.tensor([1.0, 3.0])}),
                                 ({"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
                                 ({"weight_loss": [1, 3], "label_smoothing": 0.2},
                                  {"weight": torch.tensor([1.0, 3.0]), "label_smoothing": 0.2})]:
        got = _build("cross_entropy", kwargs, num_classes=2)(x, y).item()
        assert got == pytest.approx(F.cross_entropy(x, idx, **torch_kwargs).item(), rel=1e-6)
    weighted = (3 * math.log(1 + math.exp(-1)) + LN2) / 4
    assert _build("cross_entropy", {"weight_loss": [1, 3]}, num_classes=2)(x, y).item() == \
        pytest.approx(weighted, rel=1e-6)


def test_cross_entropy_ignores_nan_and_unlabelled_voxels():
    classes = [1, 0, None, -1]  # NaN voxel, all-zero voxel
    x = _two_class_logits([1.0, 0.0, 5.0, -7.0], classes)
    y = _one_hot(classes)
    y[0, 1, 0, 2] = 1.0  # one channel NaN is enough to ignore the voxel
    loss = _build("cross_entropy", num_classes=2)(x, y)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + LN2) / 2, rel=1e-6)
    idx = torch.tensor([[[1, 0, -100, -100]]])
    assert loss.item() == pytest.approx(F.cross_entropy(x, idx, ignore_index=-100).item())
    loss.backward()
    assert torch.equal(x.grad[..., 2:], torch.zeros(1, 2, 1, 2))
    everything_ignored = _build("cross_entropy", num_classes=2)(x, _one_hot([None, -1, -1, -1]))
    assert everything_ignored.item() == 0.0 and everything_ignored.grad_fn is not None


def test_cross_entropy_with_a_cost_map_3d_and_aux_list():
    x = _two_class_logits([1.0, 0.0], [1, 0]).detach()
    y = _one_hot([1, 0])
    cost = _t([2, 1], (1, 1, 1, 2))
    crit = _build("cross_entropy", {"weight_loss": [1, 3]}, num_classes=2)
    # sum(w[y] c l) / sum(w[y] c) = (3*2 l0 + 1*1 ln 2) / (6 + 1)
    expected = (6 * math.log(1 + math.exp(-1)) + LN2) / 7
    assert crit(x, y, weight=cost).item() == pytest.approx(expected, rel=1e-6)
    x3, y3, c3 = x.unsqueeze(2), y.unsqueeze(2), cost.unsqueeze(2)  # (1, 2, 1, 1, 2)
    assert crit(x3, y3, c3).item() == pytest.approx(expected, rel=1e-6)
    assert crit([x3, x3 * 0], y3, c3).item() == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------ aux loss


def test_aux_total_with_loss_weights_by_hand():
    classes = [1, 0, 1]
    main = _two_class_logits([0.0, 0.0, 0.0], classes)  # ln 2 each
    aux1 = _two_class_logits([LN3, LN3, LN3], classes)  # ln(4/3) each
    aux2 = _two_class_logits([-LN3, -LN3, -LN3], classes)  # ln 4 each
    y = _one_hot(classes)
    crit = _build("aux", {"loss_weight": [1, 0.5, 0.25]}, num_classes=2)
    assert isinstance(crit, AuxLoss) and crit.base_name == "cross_entropy"
    total = crit([main, aux1, aux2], y)
    expected = LN2 + 0.5 * LN43 + 0.25 * LN4  # 1.183562
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.183562, abs=1e-6)
    total.backward()
    assert aux2.grad.abs().sum() > 0
    assert crit(main.detach(), y).item() == pytest.approx(LN2)  # eval mode: the base alone
    default = _build("aux", num_classes=2)
    assert default((main, aux1, aux2), y).item() == pytest.approx(LN2 + LN43 + LN4)
    cost = _t([0, 1, 1], (1, 1, 1, 3))  # the cost map reaches every output
    assert default((main, aux1, aux2), y, cost).item() == pytest.approx(LN2 + LN43 + LN4)


def test_aux_with_other_bases():
    main = _t([0.0, LN3, -LN3, LN3], (1, 1, 2, 2))
    y = _t([1, 1, 0, 0], (1, 1, 2, 2))
    bce = (LN2 + 2 * LN43 + LN4) / 4
    crit = _build("aux", {"base": "bce", "loss_weight": [1, 2]})
    assert crit([main, main], y).item() == pytest.approx(3 * bce, rel=1e-6)
    pos = _build("aux", {"base": "bce", "pos_weight": [2.0], "loss_weight": [1]})
    assert pos([torch.zeros(1, 1, 1, 1)], torch.ones(1, 1, 1, 1)).item() == \
        pytest.approx(2 * LN2)
    dice = _build("aux", {"base": "dice", "smooth": 0, "loss_weight": [1, 1]})
    zeros = torch.zeros(1, 1, 2, 2)
    assert dice([zeros, zeros], y).item() == pytest.approx(1.0)  # 2 * (1 - 0.5)
    bce_dice = _build("aux", {"base": "bce_dice", "smooth": 0, "loss_weight": [1]})
    assert bce_dice([zeros], y).item() == pytest.approx(LN2 + 0.5)


# ---------------------------------------------------------------- balanced class weights


def test_balanced_weights_by_hand_sigmoid():
    y = torch.zeros(1, 3, 2, 4)
    y[0, 0].view(-1)[:4] = 1  # class 0: 4 of 8 positive -> frequency 1/2
    y[0, 1].view(-1)[:1] = 1  # class 1: 1 of 8 -> 1/8
    # class 2: no positive -> clipped to (1/2) / 10; inverse: [2, 8, 20], mean 10
    w = balanced_class_weights(y)
    assert w.tolist() == pytest.approx([0.2, 0.8, 2.0])
    assert not w.requires_grad
    # max ratio 2: frequencies raised to >= 1/4 -> inverse [2, 4, 4], mean 10/3
    assert balanced_class_weights(y, max_ratio=2).tolist() == pytest.approx([0.6, 1.2, 1.2])
    # partial annotation: class 1 annotated on 4 voxels only -> 1/4 -> inverse [2, 4, 20]
    y[0, 1].view(-1)[4:] = NAN
    assert balanced_class_weights(y).tolist() == pytest.approx([6 / 26, 12 / 26, 60 / 26])
    y[0, 2] = NAN  # no valid voxel: weight 1, left out of the mean -> [2, 4] / 3
    assert balanced_class_weights(y).tolist() == pytest.approx([2 / 3, 4 / 3, 1.0])
    assert balanced_class_weights(torch.zeros(1, 2, 2, 2)).tolist() == [1.0, 1.0]


def test_balanced_weights_in_losses_equal_the_fixed_ones():
    y = torch.zeros(1, 3, 2, 4)
    y[0, 0].view(-1)[:4] = 1
    y[0, 1].view(-1)[:1] = 1
    x = torch.randn(1, 3, 2, 4, generator=torch.Generator().manual_seed(0))
    for name in (None, "dice", "bce_dice", "MSELoss"):
        balanced = _build(name, {"weight_loss": "balanced"}, num_classes=3)(x, y)
        fixed = _build(name, {"weight_loss": [0.2, 0.8, 2.0]}, num_classes=3)(x, y)
        assert balanced.item() == pytest.approx(fixed.item(), rel=1e-6), name


def test_balanced_weights_for_cross_entropy_by_hand():
    classes = [0, 0, 0, 0, 0, 0, 1, 1, None, -1]  # 6 and 2 of 8 valid -> inverse [4/3, 4]
    y = _one_hot(classes)
    assert balanced_class_weights(y, exclusive=True).tolist() == pytest.approx([0.5, 1.5])
    x = torch.randn(1, 2, 1, 10, generator=torch.Generator().manual_seed(1))
    balanced = _build("cross_entropy", {"weight_loss": "balanced"}, num_classes=2)(x, y)
    idx = torch.tensor([[[0, 0, 0, 0, 0, 0, 1, 1, -100, -100]]])
    expected = F.cross_entropy(x, idx, weight=torch.tensor([0.5, 1.5]), ignore_index=-100)
    assert balanced.item() == pytest.approx(expected.item(), rel=1e-6)


# --------------------------------------------------------------------- activation


def test_activation_for():
    assert activation_for("cross_entropy") == "softmax"
    assert activation_for("aux") == "softmax"  # base cross_entropy by default
    assert activation_for("aux", {"base": "bce_dice"}) == "sigmoid"
    assert activation_for(AuxLoss, {"base": "cross_entropy"}) == "softmax"
    assert activation_for(SoftmaxCrossEntropyLoss) == "softmax"
    for value in (None, "dice", "bce_dice", "BCEWithLogitsLoss", nn.MSELoss, lambda a, b: 0):
        assert activation_for(value) == "sigmoid"
    assert activation_for(_build("aux", num_classes=2)) == "softmax"
    assert activation_for(_build("aux", {"base": "dice"}, num_classes=2)) == "sigmoid"
    assert activation_for(_build("cross_entropy", num_classes=2)) == "softmax"
    assert activation_for(_build()) == "sigmoid"

    class Declared(nn.Module):
        activation = "softmax"

    assert activation_for(Declared()) == "softmax"


# ----------------------------------------------------------------------------- errors


def test_unknown_aux_base_suggests():
    with pytest.raises(ConfigError) as info:
        _build("aux", {"base": "cross_entropie"}, num_classes=2)
    assert str(info.value) == (
        "cfg.py: criterion: criterion_kwargs['base'] of criterion 'aux' is unknown (got "
        "'cross_entropie'); use one of 'bce', 'cross_entropy', 'dice', 'bce_dice' "
        "(did you mean 'cross_entropy'?)")


def test_unknown_aux_kwargs_are_named():
    with pytest.raises(ConfigError, match=r"criterion_kwargs has unknown key\(s\) for aux with "
                                          r"base 'dice': 'smoth' \(did you mean 'smooth'\?\)"):
        _build("aux", {"base": "dice", "smoth": 1})


@pytest.mark.parametrize("value", ["high", [], [1, -1], [1, "a"], [True, 1]])
def test_bad_loss_weight_at_build(value):
    with pytest.raises(ConfigError, match=r"cfg.py: criterion: criterion_kwargs\['loss_weight'\] "
                                          r"must be a list of numbers >= 0, one per model output "
                                          r"\(main first\) \(got .*\); e.g. loss_weight"):
        _build("aux", {"loss_weight": value}, num_classes=2)


def test_loss_weight_length_must_match_the_outputs():
    crit = _build("aux", {"loss_weight": [1, 0.5, 0.25]}, num_classes=2)
    x = torch.zeros(1, 2, 1, 1)
    with pytest.raises(ConfigError) as info:
        crit([x, x], _one_hot([0]))
    assert str(info.value) == (
        "cfg.py: criterion: the model returns 2 output(s) but criterion_kwargs['loss_weight'] "
        "has 3 weight(s) (got [1.0, 0.5, 0.25]); give 2 weights, one per output (main first)")


def test_softmax_needs_two_classes():
    for name in ("cross_entropy", "aux"):
        with pytest.raises(ConfigError, match=r"cfg.py: criterion: a softmax criterion needs at "
                                              r"least 2 mutually exclusive classes \(got 1\); "
                                              r"list the background as a class too"):
            _build(name, num_classes=1)
    with pytest.raises(ConfigError, match=r"needs at least 2 mutually exclusive classes"):
        SoftmaxCrossEntropyLoss()(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))


def test_cross_entropy_kwargs_errors():
    with pytest.raises(ConfigError, match=r"criterion_kwargs\['ignore_index'\] is not used "
                                          r"\(got 0\); remove it: voxels whose target is NaN"):
        _build("cross_entropy", {"ignore_index": 0}, num_classes=2)
    _build("aux", {"ignore_index": None}, num_classes=2)  # Allen's default is accepted
    with pytest.raises(ConfigError, match=r"cannot build criterion SoftmaxCrossEntropyLoss: "
                                          r"label_smoothing must be a number in \[0, 1\)"):
        _build("cross_entropy", {"label_smoothing": 1.5}, num_classes=2)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) for SoftmaxCrossEntropyLoss: "
                                          r"'weight' \(did you mean 'weight_loss'\?\)"):
        _build("cross_entropy", {"weight": [1, 2]}, num_classes=2)
    with pytest.raises(ConfigError, match=r"\(did you mean 'cross_entropy'\?\)"):
        _build("cross_entropie")


def test_weight_loss_string_errors():
    with pytest.raises(ConfigError, match=r"needs one weight >= 0 per class \(got 'balance'\); "
                                          r"give a list of 2 numbers, not all 0, or 'balanced' "
                                          r"\(did you mean 'balanced'\?\)"):
        _build(None, {"weight_loss": "balance"}, num_classes=2)
    with pytest.raises(ConfigError, match=r"weight_loss cannot be applied to a custom criterion "
                                          r"\(got 'balanced'\)"):
        _build(lambda a, b: a.sum(), {"weight_loss": "balanced"})


def test_custom_criterion_that_cannot_take_a_cost_map():
    def no_weight(output, target):
        return output.sum()

    with pytest.raises(ConfigError) as info:
        _build(no_weight, has_cost_map=True)
    assert str(info.value) == (
        "cfg.py: criterion: the training data has cost maps (per-voxel loss weights) but the "
        "custom criterion cannot take them (got 'no_weight'); give its forward a 'weight=None' "
        "argument (a (B, 1, *spatial) tensor), or use a built-in criterion")

    class Module(nn.Module):
        def forward(self, output, target):
            return output.sum()

    with pytest.raises(ConfigError, match="custom criterion cannot take them"):
        _build(Module(), has_cost_map=True)


def test_cost_map_of_the_wrong_shape():
    crit = _build()
    x, y = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    with pytest.raises(DataError) as info:
        crit(x, y, weight=torch.ones(1, 2, 2, 2))
    assert str(info.value) == (
        "cfg.py: criterion: the per-voxel loss weight (cost map) must be shaped (B, 1, *spatial) "
        "like the target (got '(1, 2, 2, 2) for target (1, 2, 2, 2)'); give one weight per "
        "output voxel")
    for name in ("dice", "cross_entropy"):
        with pytest.raises(DataError, match=r"cost map\) must be shaped"):
            _build(name, num_classes=2)(x, y, torch.ones(1, 1, 3, 2))


def test_bad_model_outputs():
    with pytest.raises(ConfigError, match=r"cfg.py: criterion: the model returned an empty list "
                                          r"of outputs \(got \[\]\)"):
        _build()([], torch.zeros(1, 1, 1, 1))
    with pytest.raises(ConfigError, match=r"the model output must be a tensor of logits "
                                          r"\(got 'dict'\)"):
        _build("dice")({"out": 1}, torch.zeros(1, 1, 1, 1))
