"""What the text modality trains and evaluates on: its networks (keel.models.text), the
tokenizer each one reads with, and the stored texts as token-id batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from keel.core.config import TEXT_MODELS, TrainConfig
from keel.core.errors import ConfigError
from keel.data.text_batches import TokenBatches
from keel.data.tokenizer import encode, load_tokenizer, minilm_folder, pad_batch
from keel.data.versions import DatasetVersion, class_indices
from keel.modalities.base import unfit_model
from keel.modalities.text_backbone import text_from_parent
from keel.models.text import bert_tiny, minilm
from keel.models.transfer import ParentModel

EVALUATION_BATCH = 128  # texts per batch of a validation or embedding pass (no gradients kept)


def tokenizer_source(model: str, meta: dict) -> Path:
    """The tokenizer file model `model` reads texts with: the pretrained encoder's own (in its
    package folder), else the dataset version's (trained on its training rows; `meta["path"]`
    is the version folder)."""
    if model == "minilm":
        return minilm_folder() / "tokenizer.json"
    return Path(meta["path"]) / (meta.get("tokenizer") or "tokenizer.json")


def build_text(config: TrainConfig, meta: dict, parent: ParentModel | None) -> tuple[nn.Module, dict]:
    """The network `config.model` for a text version's `meta` and its record (keel.core.contracts
    ModelSpec fields, plus `tokenizer_source`: the file the training stage saves beside it)."""
    if config.model not in TEXT_MODELS:
        raise unfit_model(config, meta)
    if parent is not None:  # a registered text model's encoder starts this one (keel.modalities.text_backbone)
        return text_from_parent(config, meta, parent)
    if config.backbone:
        raise ConfigError(f"--backbone {config.backbone} is loaded by the training stage (`keel train`); train "
                          f"{config.model} on {meta['dataset']} through it, or without --backbone")
    n_classes = len(meta["labels"])
    tokenizer = tokenizer_source(config.model, meta)
    if config.model == "minilm":
        network, build, pretrained = minilm(n_classes)
    else:
        network, build = bert_tiny(load_tokenizer(tokenizer).get_vocab_size(), config.max_length, n_classes)
        pretrained = "none"
    return network, {"architecture": config.model, "input": "text", "build": build, "pretrained": pretrained,
                     "max_length": config.max_length, "text_column": meta.get("text_column") or "text",
                     "tokenizer_source": str(tokenizer)}


def token_ids(version: DatasetVersion, indices: np.ndarray, tokenizer_file: str | Path,
              max_length: int) -> list[list[int]]:
    """The stored texts of rows `indices` (sorted) as token ids, cut to `max_length` tokens."""
    texts = version.texts()
    return encode(load_tokenizer(tokenizer_file), [texts[int(i)] for i in np.sort(indices)], max_length)[0]


def text_batches(version: DatasetVersion, indices: np.ndarray, config: TrainConfig, device: torch.device,
                 train: bool, record: dict | None = None) -> TokenBatches:
    """Rows `indices` as token-id batches of `config.batch_size` texts, length-bucketed and
    shuffled by the loop's generator when `train`, else in length order (keel.data.text_batches).
    They are tokenized as the network `record` describes reads (its `tokenizer_source`: a
    backbone's tokenizer), else as `config.model` reads."""
    rows = np.sort(indices)
    tokenizer = (record or {}).get("tokenizer_source") or tokenizer_source(
        config.model, {**version.meta, "path": version.path})
    ids = token_ids(version, rows, tokenizer, config.max_length)
    targets = torch.from_numpy(class_indices(version.labels()[rows], version.meta["labels"]))
    return TokenBatches(ids, targets, config.batch_size if train else EVALUATION_BATCH, device, train)


def text_model_inputs(version: DatasetVersion, indices: np.ndarray, model_config: dict) -> torch.Tensor:
    """Rows `indices` (sorted) as int64 token ids N x L, padded with 0, tokenized as the model
    `model_config` describes (its `tokenizer_file`, set by whoever loaded it, and max_length)."""
    return pad_batch(token_ids(version, indices, model_config["tokenizer_file"], model_config["max_length"]))
