"""Resumable, rank-sharded sampling: every sample is a pure function of (seed, epoch, position).

The training sampler yields ``(index, sample_seed)`` pairs. ``index`` walks a seeded
permutation of the dataset (refreshed each pass); ``sample_seed`` seeds the dataset's own
randomness (random patches, augmentation). Both depend only on the run seed, the epoch,
the batch number, the rank and the place in the batch, so a run resumed at batch ``k`` of
epoch ``e`` sees exactly the batches an uninterrupted run sees, whatever the number of
DataLoader workers.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Sampler


def batches_per_epoch(dataset_len: int, *, iterations_per_epoch: int | None, batch_size: int, world_size: int) -> int:
    """Iterations in one epoch on each rank."""
    if iterations_per_epoch is not None:
        return iterations_per_epoch
    return max(1, math.ceil(dataset_len / (batch_size * world_size)))


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)`` for one epoch of one rank, from ``start_batch`` on.

    The pairs are :class:`bioloop.engine.loader.SampleKey` tuples that also carry ``.epoch``;
    ``epoch`` and ``start_batch`` may be changed between iterations (a loader built once per run).
    """

    def __init__(
        self,
        dataset_len: int,
        *,
        epoch: int,
        seed: int,
        batch_size: int,
        iterations_per_epoch: int | None,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        shuffle: bool = True,
    ):
        if dataset_len < 1:
            raise ValueError("the training dataset is empty")
        self.n = dataset_len
        self.epoch = epoch
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.world = world_size
        self.start_batch = start_batch
        self.shuffle = shuffle
        self.num_batches = batches_per_epoch(
            dataset_len, iterations_per_epoch=iterations_per_epoch, batch_size=batch_size, world_size=world_size
        )

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch) * self.batch_size

    def _order(self, needed: int) -> np.ndarray:
        """Concatenated seeded permutations long enough for ``needed`` global positions."""
        passes = math.ceil(needed / self.n)
        if not self.shuffle:
            return np.tile(np.arange(self.n), passes)
        rng = np.random.default_rng([self.seed, self.epoch, 0x5EED])
        return np.concatenate([rng.permutation(self.n) for _ in range(passes)])

    def __iter__(self):
        from bioloop.engine.loader import SampleKey

        total = self.num_batches * self.batch_size * self.world
        order = self._order(total)
        for batch in range(self.start_batch, self.num_batches):
            for j in range(self.batch_size):
                position = (batch * self.world + self.rank) * self.batch_size + j
                sample_seed = int(
                    np.random.SeedSequence([self.seed, self.epoch, position]).generate_state(1, dtype=np.uint64)[0]
                    % (2**63)
                )
                yield SampleKey(int(order[position]), sample_seed, self.epoch)


class ShardSampler(Sampler):
    """Deterministic validation order: rank ``r`` takes indices ``r, r+world, ...``."""

    def __init__(self, dataset_len: int, *, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, dataset_len, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)
