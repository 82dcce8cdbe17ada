"""Optimizer and scheduler specs, the LRListScheduler, and every error message."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as sched

from bioloop.engine.optim import (
    LRListScheduler,
    build_optimizer,
    build_scheduler,
    current_lrs,
    step_scheduler,
)
from bioloop.errors import ConfigError


def _params():
    return list(nn.Linear(2, 1).parameters())


def _opt(lr: float = 1.0, groups: int = 1) -> torch.optim.Optimizer:
    layers = [nn.Linear(2, 1) for _ in range(groups)]
    return torch.optim.SGD([{"params": layer.parameters()} for layer in layers], lr=lr)


def _run(optimizer, scheduler, epochs: int) -> list[list[float]]:
    """Learning rates used in each epoch (optimizer steps before the scheduler)."""
    seen = []
    for _ in range(epochs):
        seen.append([round(lr, 10) for lr in current_lrs(optimizer)])
        optimizer.step()
        step_scheduler(scheduler)
    return seen


def _flat(rows):
    return [row[0] for row in rows]


# --------------------------------------------------------------------------- optimizer


def test_default_is_radam_with_decoupled_weight_decay():
    optimizer = build_optimizer(None, _params(), learning_rate=0.003, where="cfg.py")
    assert type(optimizer) is torch.optim.RAdam
    assert optimizer.defaults["lr"] == 0.003
    assert optimizer.defaults["decoupled_weight_decay"] is True


def test_instance_is_returned_as_is():
    params = _params()
    optimizer = torch.optim.SGD(params, lr=0.5)
    assert build_optimizer(optimizer, params, learning_rate=0.1, where="cfg.py") is optimizer
    groups = [{"params": params[:1]}, {"params": params[1:]}]
    assert build_optimizer(optimizer, groups, learning_rate=0.1, where="cfg.py") is optimizer


def test_instance_for_another_model_is_refused():
    optimizer = torch.optim.SGD(_params(), lr=0.5)
    with pytest.raises(ConfigError, match=r"cfg\.py: optimizer: the optimizer was built for a "
                       r"different model.*build it from model\.parameters\(\)"):
        build_optimizer(optimizer, _params(), learning_rate=0.1, where="cfg.py")


def test_class_gets_the_learning_rate():
    optimizer = build_optimizer(torch.optim.AdamW, _params(), learning_rate=0.02, where="cfg.py")
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["lr"] == 0.02


def test_callable_receives_params():
    params = _params()
    optimizer = build_optimizer(
        lambda p: torch.optim.SGD(p, lr=0.7, momentum=0.9), params, learning_rate=0.1, where="c.py"
    )
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.param_groups[0]["params"] == params


def test_callable_must_return_an_optimizer():
    with pytest.raises(ConfigError, match=r"c\.py: optimizer: the optimizer callable did not "
                       r"return a torch\.optim\.Optimizer \(got 'list'\)"):
        build_optimizer(lambda p: list(p), _params(), learning_rate=0.1, where="c.py")


def test_dict_and_string_specs():
    optimizer = build_optimizer(
        {"type": "AdamW", "params": {"weight_decay": 0.05}}, _params(), learning_rate=0.01,
        where="cfg.py",
    )
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["weight_decay"] == 0.05 and optimizer.defaults["lr"] == 0.01
    override = build_optimizer({"type": "SGD", "params": {"lr": 0.5}}, _params(),
                               learning_rate=0.01, where="cfg.py")
    assert override.defaults["lr"] == 0.5
    named = build_optimizer("Adam", _params(), learning_rate=0.01, where="cfg.py")
    assert type(named) is torch.optim.Adam
    frozen = MappingProxyType({"type": "SGD", "params": None})  # any mapping, params optional
    optimizer = build_optimizer(frozen, _params(), learning_rate=0.01, where="c.py")
    assert type(optimizer) is torch.optim.SGD


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"type": "Adamw"},
         r"cfg\.py: optimizer: unknown optimizer type 'Adamw' \(did you mean 'AdamW'\?\)$"),
        ("adamw", r"unknown optimizer type 'adamw' \(did you mean 'AdamW'\?\)"),
        ("Rprob", r"unknown optimizer type 'Rprob' \(did you mean 'Rprop'\?\)"),
        ("Zebra", r"unknown optimizer type 'Zebra'; choose one of: .*AdamW.*SGD"),
        ({"type": "SGD", "param": {}},
         r"unknown key\(s\) \['param'\] in the optimizer spec; a spec has only"),
        ({"params": {}}, r"the optimizer spec needs a 'type' name \(got None\); e\.g\. \{'type'"),
        ({"type": "SGD", "params": [0.1]},
         r"cfg\.py: optimizer\.params: must be a dict of keyword arguments"),
        ({"type": "AdamW", "params": {"betaz": 1}},
         r"cannot build AdamW \(.*'betaz'.*\).*; AdamW accepts lr, betas, eps, weight_decay"),
        ({"type": "SGD", "params": {"lr": -1.0}},
         r"cannot build SGD \(Invalid learning rate: -1\.0\)"),
        (42, r"cfg\.py: optimizer: cannot make the optimizer from this value \(got 42\)"),
    ],
)
def test_optimizer_spec_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_optimizer(spec, _params(), learning_rate=0.1, where="cfg.py")


def test_class_that_rejects_lr_is_a_config_error():
    class NoLr(torch.optim.SGD):
        def __init__(self, params):
            super().__init__(params, lr=0.1)

    with pytest.raises(ConfigError, match=r"cannot build NoLr \(.*'lr'"):
        build_optimizer(NoLr, _params(), learning_rate=0.1, where="cfg.py")


# --------------------------------------------------------------------------- scheduler forms


def test_none_gives_no_scheduler():
    assert build_scheduler(None, _opt(), where="cfg.py") is None
    step_scheduler(None)  # a no-op


def test_instance_must_wrap_the_same_optimizer():
    optimizer = _opt()
    scheduler = sched.StepLR(optimizer, step_size=1)
    assert build_scheduler(scheduler, optimizer, where="cfg.py") is scheduler
    with pytest.raises(ConfigError, match=r"cfg\.py: scheduler: the scheduler wraps a different "
                       r"optimizer"):
        build_scheduler(scheduler, _opt(), where="cfg.py")


def test_class_callable_string_and_dict_forms():
    optimizer = _opt(lr=1.0)
    constant = build_scheduler(sched.ConstantLR, optimizer, where="cfg.py")
    assert isinstance(constant, sched.ConstantLR)
    step = build_scheduler(lambda o: sched.StepLR(o, step_size=2, gamma=0.5), _opt(1.0),
                           where="cfg.py")
    assert _flat(_run(step.optimizer, step, 5)) == [1.0, 1.0, 0.5, 0.5, 0.25]
    named = build_scheduler("ConstantLR", _opt(), where="cfg.py")
    assert isinstance(named, sched.ConstantLR)
    spec = {"type": "ExponentialLR", "params": {"gamma": 0.5}}
    exponential = build_scheduler(spec, _opt(1.0), where="cfg.py")
    assert _flat(_run(exponential.optimizer, exponential, 4)) == [1.0, 0.5, 0.25, 0.125]


def test_sequential_spec_lr_sequence():
    optimizer = _opt(lr=0.1)
    spec = {
        "type": "SequentialLR",
        "params": {
            "schedulers": [
                {"type": "LinearLR", "params": {"start_factor": 0.5, "total_iters": 2}},
                {"type": "StepLR", "params": {"step_size": 1, "gamma": 0.5}},
            ],
            "milestones": [2],
        },
    }
    scheduler = build_scheduler(spec, optimizer, where="cfg.py")
    # warm-up 0.05 -> 0.075, then StepLR restarts from 0.1 and halves every epoch
    assert _flat(_run(optimizer, scheduler, 6)) == [0.05, 0.075, 0.1, 0.05, 0.025, 0.0125]


def test_chained_spec_lr_sequence():
    optimizer = _opt(lr=1.0)
    spec = {
        "type": "ChainedScheduler",
        "params": {"schedulers": [
            {"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 2}},
            {"type": "ExponentialLR", "params": {"gamma": 0.9}},
        ]},
    }
    scheduler = build_scheduler(spec, optimizer, where="cfg.py")
    # 0.5 (constant factor), x0.9, factor lifted at epoch 2 (x2) and x0.9, x0.9
    assert _flat(_run(optimizer, scheduler, 4)) == [0.5, 0.45, 0.81, 0.729]


def test_nested_errors_name_their_position():
    spec = {"type": "SequentialLR", "params": {
        "schedulers": [{"type": "ConstantLR"}, {"type": "StepLr", "params": {"step_size": 1}}],
        "milestones": [10],
    }}
    with pytest.raises(ConfigError) as info:
        build_scheduler(spec, _opt(), where="cfg.py")
    assert str(info.value) == (
        "cfg.py: scheduler.params.schedulers[1]: unknown scheduler type 'StepLr' "
        "(did you mean 'StepLR'?)"
    )
    deeper = {"type": "ChainedScheduler", "params": {"schedulers": [
        {"type": "ConstantLR"}, {"type": "ChainedScheduler", "params": {"schedulers": [
            {"type": "ConstantLR"}, {"type": "ExponentialLR", "params": {"gama": 0.9}}]}}]}}
    with pytest.raises(ConfigError, match=r"cfg\.py: scheduler\.params\.schedulers\[1\]\.params\."
                       r"schedulers\[1\]: cannot build ExponentialLR \(.*'gama'"):
        build_scheduler(deeper, _opt(), where="cfg.py")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("StepLr",
         r"cfg\.py: scheduler: unknown scheduler type 'StepLr' \(did you mean 'StepLR'\?\)"),
        ("Zebra", r"unknown scheduler type 'Zebra'; choose one of: .*LRListScheduler.*StepLR"),
        (sched.StepLR, r"cfg\.py: scheduler: cannot build StepLR \(.*step_size.*\)"),
        ({"type": "StepLR", "interval": "epoch"},
         r"unknown key\(s\) \['interval'\] in the scheduler spec"),
        ({"type": "SequentialLR", "params": {"milestones": [1]}},
         r"cfg\.py: scheduler\.params: SequentialLR needs 'schedulers': a non-empty list"),
        ({"type": "SequentialLR", "params": {"schedulers": [None], "milestones": []}},
         r"cfg\.py: scheduler\.params: SequentialLR schedulers cannot be None"),
        ({"type": "SequentialLR",
          "params": {"schedulers": ["ConstantLR", "ConstantLR"], "milestones": []}},
         r"cfg\.py: scheduler\.params: cannot build SequentialLR \(.*number of milestones"),
        ({"type": "ChainedScheduler",
          "params": {"schedulers": ["ConstantLR", "ReduceLROnPlateau"]}},
         r"cannot build ChainedScheduler \(.*does not support `ReduceLROnPlateau`"),
        (lambda o: "StepLR",
         r"the scheduler callable did not return a learning-rate scheduler \(got 'str'\)"),
        (lambda o: sched.ConstantLR(_opt()), r"the scheduler wraps a different optimizer"),
        (3.5, r"cfg\.py: scheduler: cannot make the scheduler from this value \(got 3\.5\)"),
        ({"type": "LRListScheduler", "params": {"milestones": [3, 2], "lr_list": [0.1, 0.01]}},
         r"cannot build LRListScheduler \(milestones must be strictly increasing "
         r"\(got \[3, 2\]\)\)"),
        ({"type": "LRListScheduler", "params": {"milestones": [2], "lr_list": [0.1, 0.01]}},
         r"lr_list needs one entry per milestone: 1 milestone\(s\) but 2 lr entries"),
    ],
)
def test_scheduler_spec_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_scheduler(spec, _opt(), where="cfg.py")


def test_custom_key_in_messages():
    with pytest.raises(ConfigError, match=r"^cfg\.py: detector\.scheduler: unknown scheduler"):
        build_scheduler("Nope", _opt(), where="cfg.py", key="detector.scheduler")


# --------------------------------------------------------------------------- stepping


def test_plateau_gets_the_metric_and_skips_without_one():
    optimizer = _opt(lr=1.0)
    spec = {"type": "ReduceLROnPlateau", "params": {"patience": 0, "factor": 0.5}}
    plateau = build_scheduler(spec, optimizer, where="cfg.py")
    step_scheduler(plateau, 1.0)
    step_scheduler(plateau, None)  # no metric this epoch: nothing happens, no error
    assert current_lrs(optimizer) == [1.0]
    step_scheduler(plateau, 2.0)  # worse than 1.0 with patience 0
    assert current_lrs(optimizer) == [0.5]


def test_current_lrs_per_group():
    optimizer = torch.optim.SGD([{"params": _params(), "lr": 0.1}, {"params": _params()}], lr=0.2)
    assert current_lrs(optimizer) == [0.1, 0.2]


# --------------------------------------------------------------------------- LRListScheduler


def test_lr_list_golden_one_value_for_all_groups():
    optimizer = _opt(lr=1.0, groups=2)
    scheduler = LRListScheduler(optimizer, milestones=[2, 4], lr_list=[[0.1], [0.01]])
    assert _run(optimizer, scheduler, 6) == [
        [1.0, 1.0], [1.0, 1.0], [0.1, 0.1], [0.1, 0.1], [0.01, 0.01], [0.01, 0.01]]


def test_lr_list_golden_per_group_and_milestone_zero():
    optimizer = _opt(lr=1.0, groups=2)
    scheduler = LRListScheduler(optimizer, milestones=[0, 3], lr_list=[[0.5, 0.4], [0.05, 0.04]])
    assert _run(optimizer, scheduler, 4) == [[0.5, 0.4], [0.5, 0.4], [0.5, 0.4], [0.05, 0.04]]
    flat = LRListScheduler(_opt(1.0), milestones=[1], lr_list=[0.3])  # bare floats work too
    assert _flat(_run(flat.optimizer, flat, 3)) == [1.0, 0.3, 0.3]


def test_lr_list_inside_sequential_uses_its_own_epochs():
    optimizer = _opt(lr=1.0)
    spec = {"type": "SequentialLR", "params": {"milestones": [2], "schedulers": [
        {"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 10}},
        {"type": "LRListScheduler", "params": {"milestones": [0, 2], "lr_list": [[0.3], [0.03]]}},
    ]}}
    scheduler = build_scheduler(spec, optimizer, where="cfg.py")
    assert _flat(_run(optimizer, scheduler, 5)) == [0.5, 0.5, 0.3, 0.3, 0.03]


def test_lr_list_state_round_trip_resumes_the_schedule(tmp_path):
    optimizer = _opt(lr=1.0)
    scheduler = LRListScheduler(optimizer, milestones=[1, 3, 5], lr_list=[[0.5], [0.25], [0.125]])
    expected = _flat(_run(optimizer, scheduler, 7))
    first = _opt(lr=1.0)
    first_sched = LRListScheduler(first, milestones=[1, 3, 5], lr_list=[[0.5], [0.25], [0.125]])
    head = _flat(_run(first, first_sched, 4))
    torch.save({"optimizer": first.state_dict(), "scheduler": first_sched.state_dict()},
               tmp_path / "s.pth")
    saved = torch.load(tmp_path / "s.pth", weights_only=True)
    resumed = _opt(lr=1.0)
    resumed_sched = LRListScheduler(resumed, milestones=[1, 3, 5], lr_list=[[0.5], [0.25], [0.125]])
    resumed.load_state_dict(saved["optimizer"])
    resumed_sched.load_state_dict(saved["scheduler"])
    assert head + _flat(_run(resumed, resumed_sched, 3)) == expected == [
        1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]


@pytest.mark.parametrize(
    "milestones, lr_list, match",
    [
        ([2, 2], [0.1, 0.2], "strictly increasing"),
        ([-1], [0.1], "non-negative ints"),
        ([1.5], [0.1], "non-negative ints"),
        ([1], [], "one entry per milestone"),
        ([1], [[0.1, 0.2, 0.3]], r"one per param group \(2\)"),
        ([1], [-0.1], "lr >= 0"),
    ],
)
def test_lr_list_validation(milestones, lr_list, match):
    with pytest.raises(ValueError, match=match):
        LRListScheduler(_opt(groups=2), milestones=milestones, lr_list=lr_list)
