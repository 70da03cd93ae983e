"""Masked-language-model batches (BERT's pre-training task): texts as token ids with 15 % of
their ordinary tokens hidden, and the hidden tokens as the targets to guess.

A batch is (packed, targets): `packed` int64 [B, 2, L] holds the model's input ids (row 0)
and the labels (row 1: the original id where a token was chosen, IGNORE elsewhere), and
`targets` the chosen tokens' original ids in row-major order, so the training loop's
cross-entropy and accuracy over (logits at the chosen positions, targets) are the masked-token
loss and accuracy. Of the chosen tokens 80 % become [MASK], 10 % a random ordinary token and
10 % stay as they are (Devlin et al. 2019). Special tokens ([PAD], [UNK], [CLS], [SEP],
[MASK]) are never chosen. Training draws the choice from the loop's generator (a resumed run
draws the same masks); evaluation masks once, from a generator of its own seed, so every
epoch's validation pass guesses the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from keel.data.text_batches import TokenBatches

IGNORE = -100  # the label of a token that is not guessed (cross-entropy's default ignore_index)
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen tokens; the rest stay unchanged


def mask_tokens(tokens: torch.Tensor, generator: torch.Generator | None, special_ids: torch.Tensor, mask_id: int,
                vocab_size: int, probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed [B, 2, L], targets [M]) of int64 token ids [B, L]: each ordinary token chosen
    with `probability`, and at least one per row that has any, drawn from `generator` (on the
    tokens' device)."""
    device = tokens.device
    ordinary = ~torch.isin(tokens, special_ids.to(device))
    scores = torch.rand(tokens.shape, generator=generator, device=device).masked_fill_(~ordinary, 2.0)
    chosen = scores < probability
    # A row that drew no token still guesses its likeliest one: no batch is left without a target.
    rows = torch.arange(len(tokens), device=device)
    chosen[rows, scores.argmin(1)] |= ordinary.any(1)
    action = torch.rand(tokens.shape, generator=generator, device=device)
    first_ordinary = int(special_ids.max()) + 1
    random_ids = torch.randint(first_ordinary, vocab_size, tokens.shape, generator=generator, device=device)
    inputs = torch.where(chosen & (action < MASK_SHARE), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (action >= MASK_SHARE) & (action < MASK_SHARE + RANDOM_SHARE), random_ids, inputs)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    return torch.stack([inputs, labels], dim=1), tokens[chosen]


class MaskedBatches(TokenBatches):
    """Token-id batches (keel.data.text_batches: length-bucketed, each padded to its longest
    text) whose tokens are masked for masked-language-model training: freshly by the loop's
    generator each training epoch, once and for good (seed `seed`) for evaluation."""

    def __init__(self, ids: list[list[int]], batch_size: int, device: torch.device, train: bool,
                 special_ids: list[int], mask_id: int, vocab_size: int, probability: float = 0.15,
                 seed: int = 0, pad_id: int = 0) -> None:
        if sorted(special_ids) != list(range(len(special_ids))):
            raise ValueError(f"the special tokens must be the vocabulary's first ids, not {sorted(special_ids)}")
        super().__init__(ids, torch.zeros(len(ids), dtype=torch.int64), batch_size, device, train, pad_id)
        self.special_ids = torch.tensor(special_ids, dtype=torch.int64)
        self.mask_id, self.vocab_size, self.probability = mask_id, vocab_size, probability
        self.fixed = None if train else self._masked_once(seed)

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.train:
            for packed, targets in self.fixed:
                yield packed.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            return
        for rows in self._training_batches(generator):
            longest = int(self.lengths[rows].max())
            tokens = self.tokens[rows, :longest].to(self.device, non_blocking=True)
            yield mask_tokens(tokens, generator, self.special_ids, self.mask_id, self.vocab_size, self.probability)

    def _masked_once(self, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation batches in length order, masked by a CPU generator seeded `seed`."""
        generator = torch.Generator().manual_seed(seed)
        batches = []
        for rows in self._length_order():
            tokens = self.tokens[rows, :int(self.lengths[rows].max())]
            batches.append(mask_tokens(tokens, generator, self.special_ids, self.mask_id, self.vocab_size,
                                       self.probability))
        return batches
