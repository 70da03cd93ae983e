"""Masked-language-model pre-training of bert-tiny on a text dataset version's training rows
(the course's fill-in-the-blank exercise), through the one training loop.

The network learns to guess hidden tokens of the version's own texts, read with the version's
own WordPiece vocabulary (trained on the same training rows): nothing but the training rows
is read, the evaluation rows are scored only afterwards. The loop (keel.training.loop) gives
checkpoint/resume, early stopping on the validation slice's masked-token accuracy, and the
time budget; the batches (keel.data.masking) make its cross-entropy and accuracy the masked
tokens' own. Its encoder then starts classifiers (`keel train --backbone models:/NAME@alias`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from keel.core.config import TrainConfig
from keel.core.errors import ConfigError, DatasetError
from keel.core.pretrain_config import PretrainConfig
from keel.data.batches import holdout_indices
from keel.data.masking import MaskedBatches
from keel.data.tokenizer import SPECIAL, encode, load_tokenizer
from keel.data.versions import DatasetVersion
from keel.models.device import autocast, select_precision
from keel.models.masked_lm import TASK, MaskedLanguageModel, bert_tiny_mlm
from keel.training.loop import EpochCallback, TrainResult, run_phases
from keel.training.phases import Phase

EVALUATION_BATCH = 128  # texts per batch of a validation or evaluation pass


def loop_config(config: PretrainConfig) -> TrainConfig:
    """The training loop's settings (seed, patience, budget, weight decay, validation slice) of a pre-training."""
    return TrainConfig(model=config.model, epochs=config.epochs, time_budget=config.time_budget,
                       batch_size=config.batch_size, learning_rate=config.learning_rate,
                       weight_decay=config.weight_decay, validation_fraction=config.validation_fraction,
                       patience=config.patience, seed=config.seed, device=config.device, precision=config.precision,
                       max_length=config.max_length)


def masked_batches(version: DatasetVersion, indices: np.ndarray, tokenizer_file: str | Path, config: PretrainConfig,
                   device: torch.device, train: bool) -> MaskedBatches:
    """Rows `indices` (sorted) of `version` as masked token-id batches, read with the tokenizer
    at `tokenizer_file`; a text with no ordinary token (nothing to guess) is left out."""
    tokenizer = load_tokenizer(tokenizer_file)
    special = [tokenizer.token_to_id(token) for token in SPECIAL]
    if None in special:
        raise DatasetError(f"{tokenizer_file}: the tokenizer lacks {SPECIAL[special.index(None)]}; ingest the dataset "
                           "again so that Keel trains its vocabulary")
    texts = version.texts()
    ids, _ = encode(tokenizer, [texts[int(i)] for i in np.sort(indices)], config.max_length)
    ids = [row for row in ids if any(token not in special for token in row)]
    if not ids:
        raise DatasetError(f"dataset {version.name} version {version.id} has no text with a word to guess in "
                           f"{len(indices)} rows; ingest more texts")
    return MaskedBatches(ids, config.batch_size if train else EVALUATION_BATCH, device, train, special,
                         tokenizer.token_to_id("[MASK]"), tokenizer.get_vocab_size(), config.mask_probability,
                         seed=config.seed)


def validation_rows(indices: np.ndarray, config: PretrainConfig) -> np.ndarray:
    """At most `config.validation_texts` of the validation slice's rows, drawn with the run's seed:
    every epoch scores the masked tokens of all of them at once."""
    if len(indices) <= config.validation_texts:
        return indices
    keep = np.random.default_rng(config.seed).permutation(len(indices))[:config.validation_texts]
    return np.sort(indices[keep])


def require_texts(version: DatasetVersion) -> None:
    """Raises ConfigError unless `version` holds texts (what pre-training reads)."""
    if version.meta.get("format") != "text":
        raise ConfigError(f"dataset {version.name} holds {version.meta.get('format')} data, and masked-language-model "
                          "pre-training reads texts; pass a text dataset (format: text), e.g. --dataset sms-spam")


def pretrain(version: DatasetVersion, config: PretrainConfig, device: torch.device,
             checkpoint_path: Path | None = None, on_epoch_end: EpochCallback | None = None,
             progress: bool | None = None) -> TrainResult:
    """Pre-trains bert-tiny with its MLM head on the training rows of a text `version` minus a
    validation slice (early stopping on its masked-token accuracy); returns the best epoch's
    network (a keel.models.masked_lm.MaskedLanguageModel) with its record."""
    require_texts(version)
    loop = loop_config(config)
    tokenizer_file = version.tokenizer_path
    torch.manual_seed(config.seed)
    network, build = bert_tiny_mlm(load_tokenizer(tokenizer_file).get_vocab_size(), config.max_length)
    model, precision = network.to(device), select_precision(config.precision, device)
    fit_idx, val_idx = holdout_indices(version, loop)
    validation = masked_batches(version, validation_rows(val_idx, config), tokenizer_file, config, device, train=False)
    phase = Phase(name="pretrain", epochs=config.epochs, learning_rate=config.learning_rate, budgeted=True,
                  batches=lambda: masked_batches(version, fit_idx, tokenizer_file, config, device, train=True))
    result = run_phases(model, [phase], validation, loop, device, precision, checkpoint_path, on_epoch_end, progress)
    record = {"architecture": config.model, "task": TASK, "input": "text", "build": build, "pretrained": "none",
              "max_length": config.max_length, "text_column": version.meta.get("text_column") or "text",
              "mask_probability": config.mask_probability, "top_k": config.top_k,
              "tokenizer_source": str(tokenizer_file)}
    return replace(result, record=record)


@torch.no_grad()
def masked_token_metrics(model: MaskedLanguageModel, source: MaskedBatches, device: torch.device, precision: str,
                         top_k: int = 5) -> dict:
    """Masked-token accuracy, top-k accuracy, mean cross-entropy and perplexity of `model` on
    the masked batches of `source`, and how many tokens were guessed."""
    model.eval()
    loss = correct = in_top = tokens = 0
    for packed, targets in source.epoch(None):
        with autocast(device, precision):
            logits = model(packed).float()
        loss += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += int((logits.argmax(1) == targets).sum())
        in_top += int((logits.topk(min(top_k, logits.shape[1]), dim=1).indices == targets[:, None]).any(1).sum())
        tokens += len(targets)
    mean = loss / max(1, tokens)
    return {"masked_accuracy": correct / max(1, tokens), "masked_top_k_accuracy": in_top / max(1, tokens),
            "top_k": top_k, "masked_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "masked_tokens": tokens}
