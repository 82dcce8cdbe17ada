"""The training and validation DataLoaders of a run, built once so their workers persist.

Worker processes start once per run, not once per epoch (nor once per validation pass). A
persistent worker holds its own copy of the dataset, so the epoch reaches it through the
sampler's items rather than through ``dataset.set_epoch`` in the main process: the training
sampler yields :class:`SampleKey` pairs ``(index, sample_seed)`` that also carry ``.epoch``, and
:class:`EpochAware` calls the dataset's ``set_epoch`` inside whichever process fetches an item
of a new epoch. Samples stay pure functions of (seed, epoch, position) with any worker count.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from bioloop.engine.sampling import EpochSampler, ShardSampler


class SampleKey(tuple):
    """``(index, sample_seed)``, unpacked as a pair, with the ``epoch`` it was drawn for."""

    def __new__(cls, index: int, seed: int, epoch: int):
        key = super().__new__(cls, (index, seed))
        key.epoch = epoch
        return key

    def __getnewargs__(self):
        return (self[0], self[1], self.epoch)


class EpochAware(Dataset):
    """Forwards items to ``dataset``, first calling its ``set_epoch`` when a key of a new epoch arrives."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.epoch = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _see(self, key) -> None:
        epoch = getattr(key, "epoch", None)
        if epoch is not None and epoch != self.epoch:
            set_epoch = getattr(self.dataset, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
            self.epoch = epoch

    def __getitem__(self, key):
        self._see(key)
        return self.dataset[key]

    def __getitems__(self, keys):
        if keys:
            self._see(keys[0])  # a batch never spans two epochs
        many = getattr(self.dataset, "__getitems__", None)
        return many(keys) if callable(many) else [self.dataset[k] for k in keys]


class TrainLoader:
    """One DataLoader over the training set for the whole run; ``epoch(e, start_batch)`` iterates epoch ``e``."""

    def __init__(self, dataset, *, batch_size: int, num_workers: int, seed: int, iterations_per_epoch,
                 rank: int = 0, world_size: int = 1, collate_fn=None, pin_memory: bool = False):
        self.sampler = EpochSampler(len(dataset), epoch=0, seed=seed, batch_size=batch_size,
                                    iterations_per_epoch=iterations_per_epoch, rank=rank, world_size=world_size)
        self.loader = DataLoader(
            EpochAware(dataset), batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
            collate_fn=collate_fn, pin_memory=pin_memory, persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def epoch(self, epoch: int, start_batch: int = 0):
        """An iterator over the batches of ``epoch`` from ``start_batch`` on (same workers every epoch)."""
        self.sampler.epoch, self.sampler.start_batch = epoch, start_batch
        return iter(self.loader)


def validation_loader(dataset, *, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1,
                      collate_fn=None, pin_memory: bool = False) -> DataLoader:
    """The validation DataLoader (rank-sharded, fixed order); its workers persist across passes."""
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank=rank,
                                                                           world_size=world_size),
                      num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)
