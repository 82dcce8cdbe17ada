"""The association loss of the global tracking transformer (GTR/DREEM), with deep supervision.

For every query instance q (frame t_q, track id g_q) and every other frame f of the window, the
logits of q against the instances of f go through a softmax (plus a background logit 0 when
``neg_unmatched``); the loss is ``-log(p_target + epsilon)`` where the target is the instance of f
with id g_q, or the background when f has no such instance (``neg_unmatched``; otherwise that frame
is skipped). Ids < 0 (unassigned) match nothing. The mean over (query, frame) pairs is averaged over
the decoder layers' logits and multiplied by ``asso_weight``. Fully vectorised (scatter, no loops
over queries or frames).
"""

from __future__ import annotations

import torch
from torch import nn

from bioloop.errors import ConfigError


class AssociationLoss(nn.Module):
    """GTR association loss; call with ``(logits, ref_ids, ref_times, query_index)``."""

    def __init__(self, neg_unmatched: bool = False, epsilon: float = 1e-4,
                 asso_weight: float = 1.0):
        super().__init__()
        for name, value in (("epsilon", epsilon), ("asso_weight", asso_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError.at(f"loss.{name}", f"{name} must be a number >= 0", got=value,
                                     fix="e.g. epsilon=1e-4, asso_weight=1.0")
        if not isinstance(neg_unmatched, bool):
            raise ConfigError.at("loss.neg_unmatched", "neg_unmatched must be True or False",
                                 got=neg_unmatched, fix="set neg_unmatched=True or False")
        self.neg_unmatched = neg_unmatched
        self.epsilon = float(epsilon)
        self.asso_weight = float(asso_weight)

    def extra_repr(self) -> str:
        return (f"neg_unmatched={self.neg_unmatched}, epsilon={self.epsilon}, "
                f"asso_weight={self.asso_weight}")

    def forward(self, logits: list[torch.Tensor] | torch.Tensor, ref_ids: torch.Tensor,
                ref_times: torch.Tensor, query_index: torch.Tensor) -> torch.Tensor:
        """logits: (M, N) or a list of them (one per decoder layer) -> a scalar loss."""
        layers = [logits] if torch.is_tensor(logits) else list(logits)
        if not layers:
            raise ValueError("AssociationLoss needs at least one logits tensor")
        device = layers[0].device
        ref_ids = torch.as_tensor(ref_ids, device=device).long()
        ref_times = torch.as_tensor(ref_times, device=device).long()
        query_index = torch.as_tensor(query_index, device=device).long()
        n, m = len(ref_ids), len(query_index)
        for layer in layers:
            if layer.shape != (m, n) or ref_times.shape != (n,):
                raise ValueError(f"logits {tuple(layer.shape)} must be (n_query={m}, n_ref={n}) "
                                 f"and ref_times {tuple(ref_times.shape)} must be ({n},)")
        frames, ref_frame = torch.unique(ref_times, return_inverse=True)  # (F,), (N,)
        pairs = self._pairs(ref_ids, ref_frame, query_index, len(frames))
        losses = torch.stack([self._layer_loss(layer.float(), ref_frame, *pairs)
                              for layer in layers])
        return losses.mean() * self.asso_weight

    def _pairs(self, ref_ids, ref_frame, query_index, n_frames):
        """Each query's target refs (M, N), has-target and counted (query, frame) pairs (M, F)."""
        q_ids, q_frame = ref_ids[query_index], ref_frame[query_index]
        target = (ref_ids[None, :] == q_ids[:, None]) & (q_ids[:, None] >= 0)  # (M, N)
        has_target = torch.zeros(len(query_index), n_frames, device=ref_ids.device)
        has_target.index_add_(1, ref_frame, target.float())
        other = torch.arange(n_frames, device=ref_ids.device)[None, :] != q_frame[:, None]
        valid = other & ((has_target > 0) | self.neg_unmatched)
        return target, has_target > 0, valid

    def _layer_loss(self, logits, ref_frame, target, has_target, valid) -> torch.Tensor:
        m, n_frames = valid.shape
        if not bool(valid.any()):
            return logits.sum() * 0.0
        index = ref_frame[None, :].expand(m, -1)
        peak = logits.new_full((m, n_frames), float("-inf")).scatter_reduce(
            1, index, logits.detach(), reduce="amax")  # per (query, frame) max, for stability
        if self.neg_unmatched:
            peak = peak.clamp(min=0.0)  # the background logit is 0
        z = torch.exp(logits - peak.gather(1, index))  # (M, N)
        denom = logits.new_zeros(m, n_frames).index_add(1, ref_frame, z)
        numer = logits.new_zeros(m, n_frames).index_add(1, ref_frame, z * target)
        if self.neg_unmatched:
            background = torch.exp(-peak)
            denom = denom + background
            numer = torch.where(has_target, numer, background)
        prob = numer / denom
        nll = -torch.log(prob + self.epsilon)
        return nll[valid].mean()
