"""Rows of a dataset version as batches for training and evaluation.

A batch source (`BatchSource`) is what the training loop iterates: `source.epoch(generator)`
yields (inputs, class indices) on the training device, shuffled and augmented by the
generator when the source trains. A modality (keel.modalities) builds them; the loop never
asks what kind of data it trains on. A source with `shard(rank, world)` (TensorBatches: pixel
tables) also trains data-parallel, each process on its share (keel.training.distributed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from keel.core.config import TrainConfig
from keel.data.versions import DatasetVersion, class_indices, group_holdout


class BatchSource(Protocol):
    """Batches of (inputs, class indices) on the device, one pass over the rows per epoch."""

    def __len__(self) -> int:
        """Batches per epoch."""

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass; shuffled and augmented by `generator` when the source trains."""

    def get_state(self) -> torch.Tensor | None:
        """A random generator state of the source's own (a DataLoader's), for checkpoints; None if it has none."""

    def set_state(self, state: torch.Tensor | None) -> None:
        """Restores what get_state returned."""


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float in [0, 1] (the course's x / 255)."""
    return images.float().div_(255.0)


@dataclass
class TensorSplit:
    """Images as uint8 N x C x H x W and class indices, already on the training device."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def load_split(version: DatasetVersion, indices: np.ndarray, device: torch.device) -> TensorSplit:
    """Rows `indices` of a dataset version (in sorted order) as tensors on `device`."""
    rows = np.sort(indices)
    images = np.asarray(version.images()[rows])
    targets = class_indices(version.labels()[rows], version.meta["labels"])
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return TensorSplit(tensor.to(device), torch.from_numpy(targets).to(device))


def holdout_indices(version: DatasetVersion, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(fitted rows, validation rows), both sorted: the training rows minus a stratified
    validation slice for early stopping (in whole groups when the version has groups)."""
    train_idx = version.indices("train")
    val_pos = group_holdout(version, train_idx, config.validation_fraction, config.seed)
    return np.sort(np.delete(train_idx, val_pos)), np.sort(train_idx[val_pos])


def training_splits(version: DatasetVersion, config: TrainConfig, device: torch.device) -> tuple[TensorSplit, TensorSplit]:
    """The fitted rows and the validation slice (holdout_indices) as tensors on `device`."""
    fit_idx, val_idx = holdout_indices(version, config)
    return load_split(version, fit_idx, device), load_split(version, val_idx, device)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device | None = None,
                     drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index tensors of one shuffled pass over `n` rows (the ragged last batch left out when
    `drop_last`, unless it is the only one)."""
    order = torch.randperm(n, device=device, generator=generator)
    end = max(n - n % batch_size, min(n, batch_size)) if drop_last else n  # fewer rows than a batch: one batch
    for start in range(0, end, batch_size):
        yield order[start:start + batch_size]


Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class TensorBatches:
    """Batches of tensors held in memory (`inputs` on any device, moved to `device` per batch).

    Training (`shuffle`): a shuffled pass drawn from the loop's generator, the ragged last batch
    dropped when `drop_last`; `transform(batch, generator)` augments it. Evaluation: the rows
    in order, `transform(batch, None)`.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, device: torch.device,
                 transform: Transform, shuffle: bool = False, drop_last: bool = False) -> None:
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size
        self.device, self.transform, self.shuffle, self.drop_last = device, transform, shuffle, drop_last

    def __len__(self) -> int:
        n = len(self.targets)
        return max(1, n // self.batch_size) if self.drop_last else -(-n // self.batch_size)

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            batches = shuffled_batches(len(self.targets), self.batch_size, generator, self.inputs.device, self.drop_last)
        else:
            batches = (slice(s, s + self.batch_size) for s in range(0, len(self.targets), self.batch_size))
        for idx in batches:
            inputs = self.inputs[idx].to(self.device, non_blocking=True)
            yield self.transform(inputs, generator if self.shuffle else None), self.targets[idx].to(self.device)

    def get_state(self) -> None:
        return None  # shuffled by the loop's generator: its state is the loop's

    def set_state(self, state) -> None:
        pass

    def shard(self, rank: int, world: int) -> TensorBatches | RankShard:
        """Rank `rank` of `world`'s share (data-parallel training, keel.training.distributed):
        of every training batch (RankShard), or a contiguous slice of the evaluation rows."""
        if self.shuffle:
            return RankShard(self, rank, world)
        start, stop = _share(len(self.targets), rank, world)
        return TensorBatches(self.inputs[start:stop], self.targets[start:stop], self.batch_size, self.device,
                             self.transform)


def rank_seed(generator: torch.Generator, rank: int, use: str) -> int:
    """A seed for rank `rank`'s own generator for `use`, derived from `generator`'s state
    without drawing from it: the same state gives the same seed (a resumed run draws alike)."""
    digest = hashlib.blake2b(generator.get_state().cpu().numpy().tobytes(), digest_size=8,
                             person=f"{use[:8]}:{rank}".encode()[:16])
    return int.from_bytes(digest.digest(), "little") >> 1


def _share(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [start, stop) of rank `rank`'s near-equal contiguous share of `n` (torch.tensor_split's)."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return start, start + size + (rank < extra)


class RankShard:
    """Rank `rank` of `world`'s share of a shuffled TensorBatches, one per batch.

    Every rank draws the same permutation from the loop's generator (seeded alike on every
    rank), cuts it into the same batches of `batch_size` as one process would and trains on the
    rank-th of `world` near-equal slices of each: as many steps per epoch as one process, on
    the same global batches. Augmentation draws from a generator of the rank's own, seeded from
    the loop's generator's state (rank_seed) without drawing from it, so the loop's generator
    stays alike on every rank (the next permutation too), is the only state a checkpoint needs
    whatever the world size, and draws what it draws in one process (the same permutations
    when nothing augments).
    """

    def __init__(self, source: TensorBatches, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def __len__(self) -> int:
        return len(self.source)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        source = self.source
        batches = list(shuffled_batches(len(source.targets), source.batch_size, generator, source.inputs.device,
                                        source.drop_last))
        own = torch.Generator(device=generator.device).manual_seed(rank_seed(generator, self.rank, "augment"))
        for idx in batches:
            start, stop = _share(len(idx), self.rank, self.world)
            rows = idx[start:stop]
            inputs = source.inputs[rows].to(source.device, non_blocking=True)
            yield source.transform(inputs, own), source.targets[rows].to(source.device)

    def get_state(self) -> None:
        return None  # drawn from the loop's generator: its state is the loop's

    def set_state(self, state) -> None:
        pass
