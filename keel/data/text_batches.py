"""Token-id batches of texts (a keel.data.batches.BatchSource): each batch padded to its own
longest text, texts of similar length batched together.

Training draws one permutation of the rows from the loop's generator, sorts each chunk of
`chunk_batches` batches by length (so a batch holds texts of similar length and pads little),
and shuffles the order of the batches with the same generator: a resumed run, whose generator
the checkpoint restored, draws the same batches. Evaluation batches the rows in length order
(the targets permuted the same way), padding least of all; predictions come out in that order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from keel.data.tokenizer import pad_batch


class TokenBatches:
    """Texts as token ids (`ids`: one list per text) with their class indices (`targets`)."""

    def __init__(self, ids: list[list[int]], targets: torch.Tensor, batch_size: int, device: torch.device,
                 train: bool, pad_id: int = 0, chunk_batches: int = 50) -> None:
        self.tokens = pad_batch(ids, pad_id)  # [N, longest] on the CPU; each batch is cut to its own longest
        self.lengths = torch.tensor([len(row) for row in ids], dtype=torch.int64)
        self.targets, self.batch_size, self.device, self.train = targets.cpu(), batch_size, device, train
        self.chunk = batch_size * chunk_batches

    def __len__(self) -> int:
        n = len(self.targets)
        full, rest = divmod(n, self.chunk) if self.train else (0, n)
        return full * -(-self.chunk // self.batch_size) + -(-rest // self.batch_size)

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for rows in (self._training_batches(generator) if self.train else self._length_order()):
            yield self._batch(rows)

    def _batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        longest = int(self.lengths[rows].max())
        tokens = self.tokens[rows, :longest]
        return tokens.to(self.device, non_blocking=True), self.targets[rows].to(self.device)

    def _length_order(self) -> list[torch.Tensor]:
        order = torch.from_numpy(np.argsort(self.lengths.numpy(), kind="stable"))
        return list(order.split(self.batch_size))

    def _training_batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        """One shuffled pass: chunks of a random permutation, each sorted by length and cut
        into batches, the batches in random order; all drawn from `generator`."""
        device = generator.device if generator is not None else None
        order = torch.randperm(len(self.targets), generator=generator, device=device).cpu()
        batches = []
        for chunk in order.split(self.chunk):
            by_length = chunk[torch.from_numpy(np.argsort(self.lengths[chunk].numpy(), kind="stable"))]
            batches += list(by_length.split(self.batch_size))
        shuffle = torch.randperm(len(batches), generator=generator, device=device).cpu()
        return [batches[i] for i in shuffle.tolist()]

    def get_state(self) -> None:
        return None  # drawn from the loop's generator: its state is the loop's

    def set_state(self, state) -> None:
        pass
