"""Masked segmentation losses: golden values, NaN masking, class weights, config errors.

Hand values: BCE-with-logits is log(1 + e^x) - x y, so with x in {0, ln 3, -ln 3}:
  x=0, y=1 -> ln 2;  x=ln 3, y=1 -> ln(4/3);  x=-ln 3, y=0 -> ln(4/3);  x=ln 3, y=0 -> ln 4.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bioloop.errors import ConfigError
from bioloop.tasks.segmentation.losses import (BCEDiceLoss, DiceLoss, MaskedLoss,
                                               build_criterion)

NAN = float("nan")
LN3 = math.log(3)
WHERE = "cfg.py: criterion"


def _logits(values, shape) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(shape).requires_grad_(True)


def _target(values, shape) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


def _build(criterion=None, kwargs=None, num_classes=1):
    return build_criterion(criterion, kwargs or {}, where=WHERE, num_classes=num_classes)


# ------------------------------------------------------------------------- golden values


def test_default_is_bce_with_logits_by_hand():
    x = _logits([0.0, LN3, -LN3, LN3], (1, 1, 2, 2))
    y = _target([1, 1, 0, 0], (1, 1, 2, 2))
    expected = (math.log(2) + 2 * math.log(4 / 3) + math.log(4)) / 4  # 0.663701
    assert _build()(x, y).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.663701, abs=1e-6)


def test_nan_targets_are_left_out_of_the_mean():
    x = _logits([0.0, LN3, -LN3, LN3], (1, 1, 2, 2))
    y = _target([1, 1, 0, NAN], (1, 1, 2, 2))
    loss = _build()(x, y)
    assert loss.item() == pytest.approx((math.log(2) + 2 * math.log(4 / 3)) / 3, rel=1e-6)
    loss.backward()
    assert x.grad[0, 0, 1, 1] == 0  # the unannotated voxel gets no gradient
    assert x.grad[0, 0, 0, 0] == pytest.approx((0.5 - 1) / 3)  # (sigmoid(0) - y) / n_valid


def test_all_nan_batch_gives_zero_loss_that_can_backward():
    x = _logits([0.5, -1.0, 2.0, 3.0], (1, 2, 1, 2))
    y = torch.full((1, 2, 1, 2), NAN)
    for name in (None, "MSELoss", "dice", "bce_dice"):
        loss = _build(name, num_classes=2)(x, y)
        assert loss.item() == 0.0, name
        assert loss.grad_fn is not None, name
        x.grad = None
        loss.backward()
        assert torch.equal(x.grad, torch.zeros_like(x)), name


def test_class_weights_weight_the_mean_by_channel():
    # class 0: [ln 2, ln(4/3)], class 1: [ln 4, not annotated]; weights 1 and 3
    x = _logits([0.0, LN3, LN3, 5.0], (1, 2, 1, 2))
    y = _target([1, 1, 0, NAN], (1, 2, 1, 2))
    loss = _build(None, {"weight_loss": [1, 3]}, num_classes=2)(x, y)
    expected = (math.log(2) + math.log(4 / 3) + 3 * math.log(4)) / (2 + 3)  # 1.027942
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pos_weight_list_becomes_a_per_class_tensor_2d_and_3d():
    crit = _build("BCEWithLogitsLoss", {"pos_weight": [2.0, 1.0]}, num_classes=2)
    assert crit.criterion.pos_weight.shape == (2, 1, 1)
    # positives of class 0 count twice: x=0, y=1 -> 2 ln 2; class 1 -> ln 2
    x2 = _logits([0.0, 0.0], (1, 2, 1, 1))
    assert crit(x2, _target([1, 1], (1, 2, 1, 1))).item() == pytest.approx(1.5 * math.log(2))
    x3 = _logits([0.0, 0.0], (1, 2, 1, 1, 1))
    assert crit(x3, _target([1, 1], (1, 2, 1, 1, 1))).item() == pytest.approx(1.5 * math.log(2))
    assert crit.criterion.pos_weight.shape == (2, 1, 1, 1)


def test_weight_list_rescales_elements_per_class():
    crit = _build("MSELoss", num_classes=2)  # MSELoss takes no weight: plain masked MSE
    x = _logits([1.0, 2.0, 3.0, 0.0], (1, 2, 1, 2))
    y = _target([0, NAN, 1, 0], (1, 2, 1, 2))
    assert crit(x, y).item() == pytest.approx((1 + 4 + 0) / 3)
    bce = _build("BCEWithLogitsLoss", {"weight": [1.0, 0.0]}, num_classes=2)
    x = _logits([0.0, 0.0], (1, 2, 1, 1))
    # torch's `weight` scales elements but does not change the count: (ln 2 + 0) / 2
    assert bce(x, _target([1, 1], (1, 2, 1, 1))).item() == pytest.approx(math.log(2) / 2)


@pytest.mark.parametrize("name, expected", [
    ("L1Loss", (1 + 2) / 2),
    ("SmoothL1Loss", (0.5 + 1.5) / 2),  # 0.5 x^2 for |x| < 1 else |x| - 0.5 (beta 1)
])
def test_other_torch_losses_by_name(name, expected):
    x = _logits([1.0, 2.0, 7.0], (1, 1, 1, 3))
    y = _target([0, 0, NAN], (1, 1, 1, 3))
    assert _build(name)(x, y).item() == pytest.approx(expected)


def test_dice_by_hand():
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)  # p = 0.5 everywhere
    y = _target([1, 1, 0, 0], (1, 1, 2, 2))
    # intersection 1, sum p 2, sum t 2 -> dice 2/4 (smooth 0) or 3/5 (smooth 1)
    assert DiceLoss(smooth=0)(x, y).item() == pytest.approx(0.5)
    assert _build("dice")(x, y).item() == pytest.approx(1 - 3 / 5)
    # one voxel unannotated: intersection 0.5, sum p 1.5, sum t 1 -> dice 1/2.5
    y_nan = _target([1, NAN, 0, 0], (1, 1, 2, 2))
    assert DiceLoss(smooth=0)(x, y_nan).item() == pytest.approx(1 - 0.4)


def test_dice_ignores_classes_without_annotation():
    x = torch.zeros(1, 2, 2, 2, requires_grad=True)
    y = torch.full((1, 2, 2, 2), NAN)
    y[0, 0] = _target([1, 1, 0, 0], (2, 2))
    assert DiceLoss(smooth=0)(x, y).item() == pytest.approx(0.5)  # class 1 left out
    weighted = _build("dice", {"weight_loss": [1, 3], "smooth": 0}, num_classes=2)
    y[0, 1] = 1.0  # class 1: intersection 2, sum p 2, sum t 4 -> dice 4/6
    expected = (1 * 0.5 + 3 * (1 - 4 / 6)) / 4
    assert weighted(x, y).item() == pytest.approx(expected)


def test_bce_dice_is_the_sum():
    x = _logits([0.0, LN3, -LN3, LN3], (1, 1, 2, 2))
    y = _target([1, 1, 0, 0], (1, 1, 2, 2))
    total = _build("bce_dice", {"smooth": 0})(x, y).item()
    assert total == pytest.approx(_build()(x, y).item() + DiceLoss(smooth=0)(x, y).item())
    assert isinstance(_build("bce_dice"), BCEDiceLoss)


# ------------------------------------------------------------------ criterion forms


def test_loss_class_is_instantiated_with_reduction_none():
    crit = _build(nn.SmoothL1Loss, {"beta": 2.0})
    assert isinstance(crit, MaskedLoss) and crit.criterion.reduction == "none"
    assert crit.criterion.beta == 2.0


def test_loss_instance_is_copied_not_changed():
    user = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 1.0]))
    crit = _build(user, num_classes=2)
    assert user.reduction == "mean" and crit.criterion.reduction == "none"
    x = _logits([0.0, 0.0], (1, 2, 1, 1, 1))
    assert crit(x, _target([1, 1], (1, 2, 1, 1, 1))).item() == pytest.approx(1.5 * math.log(2))
    assert user.pos_weight.shape == (2,)


def test_loss_instance_accepts_weight_loss():
    crit = _build(nn.MSELoss(), {"weight_loss": [0, 1]}, num_classes=2)
    x = _logits([5.0, 1.0], (1, 2, 1, 1))
    assert crit(x, _target([0, 0], (1, 2, 1, 1))).item() == pytest.approx(1.0)


def test_plain_callable_is_used_as_given_and_sees_nan():
    seen = {}

    def my_loss(logits, target):
        seen["nan"] = bool(torch.isnan(target).any())
        return logits.sum() * 0 + 7.0

    crit = _build(my_loss)
    assert isinstance(crit, nn.Module)
    assert crit(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), NAN)).item() == 7.0
    assert seen["nan"]


def test_criterion_is_a_module_that_moves_with_to():
    crit = _build(None, {"pos_weight": [1.0, 2.0], "weight_loss": [1, 1]}, num_classes=2)
    buffers = dict(crit.named_buffers())
    assert set(buffers) == {"class_weights", "criterion.pos_weight"}


def test_integer_targets_are_accepted():
    x = _logits([0.0], (1, 1, 1, 1))
    y = torch.ones(1, 1, 1, 1, dtype=torch.int64)
    assert _build()(x, y).item() == pytest.approx(math.log(2))


# ----------------------------------------------------------------------------- errors


def _message(exc_info) -> str:
    return str(exc_info.value)


def test_unknown_criterion_name_suggests():
    with pytest.raises(ConfigError) as info:
        _build("BCEWithLogitLoss")
    assert _message(info) == (
        "cfg.py: criterion: unknown criterion (got 'BCEWithLogitLoss'); use a torch.nn loss "
        "class name or one of 'dice', 'bce_dice' (did you mean 'BCEWithLogitsLoss'?)")
    with pytest.raises(ConfigError, match=r"\(did you mean 'bce_dice'\?\)"):
        _build("bce_dise")
    with pytest.raises(ConfigError, match=r"\(did you mean 'MSELoss'\?\)"):
        _build("mseloss")


def test_unknown_criterion_kwargs_are_named():
    with pytest.raises(ConfigError) as info:
        _build("BCEWithLogitsLoss", {"pos_wieght": [1.0], "foo": 1})
    msg = _message(info)
    assert msg.startswith("cfg.py: criterion: criterion_kwargs has unknown key(s) for "
                          "BCEWithLogitsLoss: 'pos_wieght' (did you mean 'pos_weight'?), 'foo'")
    assert "accepted keys are 'weight', 'size_average', 'reduce', 'pos_weight'" in msg


def test_reduction_may_not_be_set():
    with pytest.raises(ConfigError, match="criterion_kwargs must not set 'reduction' "
                                          r"\(got 'sum'\); remove it"):
        _build("MSELoss", {"reduction": "sum"})


@pytest.mark.parametrize("kwargs, text", [
    ({"weight_loss": [1, 2, 3]}, r"criterion_kwargs\['weight_loss'\] needs one weight >= 0 "
                                 r"per class \(got \[1, 2, 3\]\); give a list of 2 numbers"),
    ({"weight_loss": [-1, 2]}, r"needs one weight >= 0 per class \(got \[-1, 2\]\)"),
    ({"weight_loss": [0, 0]}, r"needs one weight >= 0 per class \(got \[0, 0\]\)"),
    ({"weight_loss": "high"}, r"needs one weight >= 0 per class \(got 'high'\)"),
    ({"pos_weight": [1, 2, 3]}, r"criterion_kwargs\['pos_weight'\] needs one number per class "
                                r"\(got \[1, 2, 3\]\); give a list of 2 numbers"),
    ({"weight": "x"}, r"criterion_kwargs\['weight'\] needs one number per class"),
])
def test_per_class_kwargs_must_match_the_classes(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        _build(None, kwargs, num_classes=2)


def test_kwargs_must_be_a_dict():
    with pytest.raises(ConfigError, match=r"criterion_kwargs must be a dict \(got \['a'\]\)"):
        _build(None, ["a"])


def test_kwargs_with_an_instance_or_function_are_rejected():
    with pytest.raises(ConfigError, match="criterion_kwargs only apply when criterion is a "
                                          r"name or a class \(got \['beta'\]\)"):
        _build(nn.SmoothL1Loss(), {"beta": 2.0})
    with pytest.raises(ConfigError, match="weight_loss cannot be applied to a custom criterion"):
        _build(lambda a, b: a.sum(), {"weight_loss": [1.0]})


def test_weight_loss_on_a_class_that_cannot_take_it():
    class Custom(nn.Module):
        def forward(self, logits, target):
            return logits.sum()

    with pytest.raises(ConfigError,
                       match=r"weight_loss cannot be applied to Custom \(got \[2.0\]\)"):
        _build(Custom, {"weight_loss": [2]})
    assert isinstance(_build(Custom), Custom)


def test_constructor_errors_become_config_errors():
    with pytest.raises(ConfigError, match=r"cfg.py: criterion: cannot build criterion DiceLoss: "
                                          r"smooth must be a number >= 0 \(got -1\)"):
        _build("dice", {"smooth": -1})


def test_not_callable_criterion():
    with pytest.raises(ConfigError, match=r"criterion must be a loss name, a loss class or a "
                                          r"callable \(got 3\)"):
        _build(3)


def test_shape_mismatch_names_out_channels():
    with pytest.raises(ConfigError, match=r"cfg.py: criterion: model output and target differ in "
                                          r"shape \(got '\(1, 2, 2, 2\) vs \(1, 3, 2, 2\)'\); "
                                          r"make the model's out_channels equal"):
        _build(num_classes=3)(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))


def test_non_elementwise_criterion_is_explained():
    crit = _build("CrossEntropyLoss", num_classes=2)
    with pytest.raises(ConfigError, match="criterion must return an elementwise loss shaped like "
                                          "the logits"):
        crit(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))


def test_class_weights_of_wrong_length_at_forward():
    crit = MaskedLoss(nn.MSELoss(reduction="none"), [1.0, 2.0, 3.0], where=WHERE)
    with pytest.raises(ConfigError, match=r"weight_loss needs one weight per class "
                                          r"\(got \[1.0, 2.0, 3.0\]\); give 2 numbers"):
        crit(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1))
