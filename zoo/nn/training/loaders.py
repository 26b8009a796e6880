"""The data module: loaders of record indices, one share of every step per training process.

A batch is a list of record indices; the module selects those records from the split's collated graphs, which sit
on the device for the whole run (zoo.nn.training's docstring). Under data-parallel training (TrainSettings.devices x
num_nodes processes) every process builds the same graphs, draws the same permutation of the training split from
(seed, epoch), cuts it into steps of batch_size structures and takes its own contiguous share of each step. The
shares of one step together are the step a single process would take, so the gradient DDP averages is the one of
one process (the loss is scaled by the share: ``step_weight``), and the run does not depend on the number of
processes except for the order of float summations. A share shorter than the others (the last step of an epoch)
is filled up with PADDING, which the module weighs zero: every process then makes the same number of steps with the
same number of records, as DDP requires.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch

from zoo.nn import graphs
from zoo.nn.training.data import SplitData, split_graphs

# A batch entry that stands for no record (a padded share): the module reads record 0 there and weighs it zero.
PADDING = -1
# Validation takes larger batches than training (no backward pass), at least this many structures per process.
MIN_VALIDATION_BATCH = 64


class EpochSampler(torch.utils.data.Sampler):
    """A permutation of range(n) drawn from (seed, epoch): the same every run, in every process and after a resume.
    Lightning calls ``set_epoch`` before each epoch (on the batch sampler's ``sampler``)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class ShareSampler(torch.utils.data.Sampler):
    """Steps of `step_size` records in the order of `sampler`; each yields process `rank`'s share (of world_size):
    ceil(len(step) / world_size) consecutive records, padded with PADDING where the step runs out. With one process
    this is torch's BatchSampler(sampler, step_size, drop_last=False)."""

    def __init__(self, sampler, step_size: int, rank: int, world_size: int):
        if step_size % world_size:
            raise ValueError(f"step_size {step_size} must be a multiple of world_size {world_size}")
        self.sampler, self.step_size, self.rank, self.world_size = sampler, step_size, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        for start in range(0, len(order), self.step_size):
            step = order[start:start + self.step_size]
            share = -(-len(step) // self.world_size)
            mine = step[self.rank * share:(self.rank + 1) * share]
            yield mine + [PADDING] * (share - len(mine))

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.step_size)


class RecordIndices(torch.utils.data.Dataset):
    """The dataset a loader reads: each index is its own item (PADDING included), collated into a tensor."""

    def __getitem__(self, index: int) -> int:
        return index


def step_weight(n_records: int, step_size: int, step: int, world_size: int) -> float:
    """The factor on the sum of one process's per-record losses in step `step` that makes DDP's average over the
    processes the mean over the step's records: world_size / (records in the step)."""
    return world_size / min(step_size, n_records - step * step_size)


def make_datamodule(data: Mapping[str, SplitData], batch_size: int, seed: int, r_cut: float):
    """A LightningDataModule over the train and validation splits: loaders of this process's share of record
    indices (``ShareSampler``); ``graphs`` holds each split's collated neighbour graphs, built once in ``setup``
    (by every process: each needs every record, as the shares change every epoch)."""
    import lightning

    class GraphDataModule(lightning.LightningDataModule):
        def __init__(self):
            super().__init__()
            self.data = {name: data[name] for name in ("train", "validation")}
            self.graphs: dict[str, graphs.GraphBatch] | None = None

        def setup(self, stage: str) -> None:
            if self.graphs is None:
                self.graphs = split_graphs(self.data, r_cut)

        def _loader(self, sampler, step_size: int):
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
            return torch.utils.data.DataLoader(RecordIndices(), num_workers=0,
                                               batch_sampler=ShareSampler(sampler, step_size, rank, world_size))

        def train_dataloader(self):
            return self._loader(EpochSampler(len(self.data["train"]), seed), batch_size)

        def val_dataloader(self):
            world_size = self.trainer.world_size
            step_size = max(batch_size // world_size, MIN_VALIDATION_BATCH) * world_size
            return self._loader(torch.utils.data.SequentialSampler(range(len(self.data["validation"]))), step_size)

    return GraphDataModule()
