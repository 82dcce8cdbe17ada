"""The GTR association loss: golden values, neg_unmatched, deep supervision, a loop reference."""

import math

import pytest
import torch

from bioloop.errors import ConfigError
from bioloop.tasks.tracking.loss import AssociationLoss

# 2 frames x 2 instances; refs 0, 1 in frame 0 and refs 2, 3 in frame 1; every ref is a query.
TIMES = torch.tensor([0, 0, 1, 1])
QUERIES = torch.arange(4)
LOGITS = torch.tensor([
    [9.0, 9.0, 2.0, 0.0],  # q0 (id 0, frame 0) vs frame 1 = [2, 0], target ref 2 (id 0)
    [9.0, 9.0, 0.0, 1.0],  # q1 (id 1, frame 0) vs frame 1 = [0, 1], target ref 3 (id 1)
    [0.0, 0.0, 9.0, 9.0],  # q2 (id 0, frame 1) vs frame 0 = [0, 0], target ref 0
    [3.0, 0.0, 9.0, 9.0],  # q3 (id 1, frame 1) vs frame 0 = [3, 0], target ref 1
])
# -log softmax of the target: log(1+e^-2), log(1+e^-1), log 2, log(1+e^3)
GOLDEN = (0.126928011 + 0.313261688 + 0.693147181 + 3.048587352) / 4  # 1.045481058


def test_golden_two_frames_two_instances():
    loss = AssociationLoss(epsilon=0.0)(LOGITS, torch.tensor([0, 1, 0, 1]), TIMES, QUERIES)
    assert loss.item() == pytest.approx(GOLDEN, abs=1e-6)


def test_same_frame_logits_are_ignored():
    """Logits against the query's own frame (the 9s) never enter the softmax."""
    changed = LOGITS.clone()
    changed[0, :2] = -50.0
    changed[3, 2:] = 50.0
    loss = AssociationLoss(epsilon=0.0)(changed, torch.tensor([0, 1, 0, 1]), TIMES, QUERIES)
    assert loss.item() == pytest.approx(GOLDEN, abs=1e-6)


def test_epsilon_guards_the_log_and_asso_weight_scales():
    ids = torch.tensor([0, 1, 0, 1])
    hopeless = torch.tensor([[0.0, 0.0, -200.0, 0.0]] * 4)  # q0's target has probability ~0
    loss = AssociationLoss(epsilon=1e-4)(hopeless[:1], ids, TIMES, QUERIES[:1])
    assert loss.item() == pytest.approx(-math.log(1e-4), rel=1e-4)
    weighted = AssociationLoss(epsilon=0.0, asso_weight=2.5)(LOGITS, ids, TIMES, QUERIES)
    assert weighted.item() == pytest.approx(2.5 * GOLDEN, abs=1e-5)


def test_neg_unmatched_targets_the_background():
    ids = torch.tensor([0, 1, 0, 2])  # id 1 only in frame 0, id 2 only in frame 1
    logits = torch.tensor([
        [0.0, 0.0, 1.0, 0.0],  # q0 vs [1, 0] + bg 0, target ref 2: e/(e+2)
        [0.0, 0.0, 1.0, 1.0],  # q1 (id 1 absent in frame 1) -> background: 1/(1+2e)
        [2.0, 0.0, 0.0, 0.0],  # q2 vs [2, 0] + bg, target ref 0: e^2/(e^2+2)
        [0.0, 0.0, 0.0, 0.0],  # q3 (id 2 absent in frame 0) -> background: 1/3
    ])
    e = math.e
    terms = [math.log((e + 2) / e), math.log(1 + 2 * e), math.log((e * e + 2) / (e * e)),
             math.log(3)]
    loss = AssociationLoss(neg_unmatched=True, epsilon=0.0)(logits, ids, TIMES, QUERIES)
    assert loss.item() == pytest.approx(sum(terms) / 4, abs=1e-6)
    # without neg_unmatched: q1, q3 are skipped and the softmax has no background column
    plain = AssociationLoss(neg_unmatched=False, epsilon=0.0)(logits, ids, TIMES, QUERIES)
    expected = (math.log((e + 1) / e) + math.log((e * e + 1) / (e * e))) / 2
    assert plain.item() == pytest.approx(expected, abs=1e-6)


def test_perfect_logits_give_zero_and_swapped_ids_a_large_loss():
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    times = torch.tensor([5, 5, 5, 6, 6, 6, 7, 7, 7])
    same = ids[:, None] == ids[None, :]
    perfect = torch.where(same, 20.0, -20.0)
    fn = AssociationLoss()
    assert fn(perfect, ids, times, torch.arange(9)).item() < 1e-3
    swapped = torch.tensor([1, 0, 2, 0, 1, 2, 0, 1, 2])  # ids 0 and 1 swapped in frame 5
    assert fn(perfect, swapped, times, torch.arange(9)).item() > 2.0


def test_deep_supervision_averages_decoder_layers():
    ids = torch.tensor([0, 1, 0, 1])
    fn = AssociationLoss(epsilon=0.0)
    other = torch.zeros(4, 4)  # every target has probability 1/2
    loss = fn([other, LOGITS], ids, TIMES, QUERIES)
    assert loss.item() == pytest.approx((math.log(2) + GOLDEN) / 2, abs=1e-6)


def test_unassigned_ids_and_single_frame_windows():
    fn = AssociationLoss(epsilon=0.0)
    ids = torch.tensor([-1, 1, -1, 1])  # -1 never matches, even another -1
    loss = fn(LOGITS, ids, TIMES, QUERIES)
    assert loss.item() == pytest.approx((0.313261688 + 3.048587352) / 2, abs=1e-6)
    logits = torch.zeros(2, 2, requires_grad=True)
    zero = fn(logits, torch.tensor([0, 1]), torch.tensor([3, 3]), torch.arange(2))
    assert zero.item() == 0.0
    zero.backward()  # still part of the graph


def _loop_reference(logits, ids, times, queries, neg_unmatched, eps):
    """The slow, obvious version: one softmax per (query, other frame)."""
    terms = []
    for row_i, q in enumerate(queries.tolist()):
        for t in sorted(set(times.tolist()) - {int(times[q])}):
            refs = (times == t).nonzero().flatten()
            row = logits[row_i, refs]
            hit = (ids[refs] == ids[q]) & (ids[q] >= 0)
            if neg_unmatched:
                row = torch.cat([row, torch.zeros(1)])
                hit = torch.cat([hit, torch.tensor([not bool(hit.any())])])
            elif not hit.any():
                continue
            terms.append(-torch.log(torch.softmax(row, 0)[hit].sum() + eps))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("neg_unmatched", [False, True])
def test_matches_a_loop_reference_on_random_windows(neg_unmatched):
    gen = torch.Generator().manual_seed(0)
    times = torch.tensor([0] * 3 + [1] * 4 + [3] * 2 + [4] * 3)
    ids = torch.tensor([0, 1, 2, 0, 1, 3, 4, 1, 4, 2, 0, -1])
    queries = torch.tensor([11, 0, 3, 5, 8, 9])
    layers = [torch.randn(len(queries), len(ids), generator=gen) * 3 for _ in range(2)]
    got = AssociationLoss(neg_unmatched=neg_unmatched)(layers, ids, times, queries)
    want = torch.stack([_loop_reference(x, ids, times, queries, neg_unmatched, 1e-4)
                        for x in layers]).mean()
    assert got.item() == pytest.approx(want.item(), abs=1e-5)


def test_gradients_flow_to_the_logits():
    logits = LOGITS.clone().requires_grad_(True)
    AssociationLoss()(logits, torch.tensor([0, 1, 0, 1]), TIMES, QUERIES).backward()
    assert logits.grad[0, 2] < 0 < logits.grad[0, 3]  # raise the target, lower the other
    assert logits.grad[0, :2].abs().sum() == 0  # own frame: no gradient


@pytest.mark.parametrize("kwargs, key", [({"epsilon": -1.0}, "loss.epsilon"),
                                         ({"asso_weight": "big"}, "loss.asso_weight"),
                                         ({"neg_unmatched": "yes"}, "loss.neg_unmatched")])
def test_bad_settings_raise_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        AssociationLoss(**kwargs)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="n_query=3"):
        AssociationLoss()(LOGITS, torch.tensor([0, 1, 0, 1]), TIMES, torch.arange(3))
