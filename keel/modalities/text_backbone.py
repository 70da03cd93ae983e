"""A text classifier that starts from a registered text model's encoder (`keel train --backbone
models:/NAME@alias` on a text dataset): a masked language model `keel pretrain` registered, or
another Keel text classifier. The new classifier reads with the parent's tokenizer: its token
ids mean what the encoder learnt them to mean.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from keel.core.config import TrainConfig
from keel.core.errors import ConfigError
from keel.models.masked_lm import classifier_from
from keel.models.transfer import ParentModel


def _vocabulary(path: str | Path) -> dict:
    """A tokenizer file's content (vocabulary, normalizer, special tokens ...), layout aside."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def text_from_parent(config: TrainConfig, meta: dict, parent: ParentModel, batches_tokenizer: Path) -> tuple[nn.Module, dict]:
    """A classifier for a text version's `meta` on a copy of `parent`'s encoder with a new head,
    and its record (tokenizer_source: the parent's tokenizer). `batches_tokenizer` is the file
    the training batches are tokenized with: it must hold the parent's vocabulary."""
    uri, parent_config = parent.uri, parent.config
    if parent_config.get("input") != "text":
        kind = {"image": "an image"}.get(parent_config.get("input"), "a pixel")
        raise ConfigError(f"--backbone {uri} is {kind} model and dataset {meta['dataset']} holds texts; pass a text "
                          f"model Keel registered, e.g. one `keel pretrain --dataset {meta['dataset']}` made")
    architecture = parent_config.get("architecture")
    if config.model != architecture:
        raise ConfigError(f"--backbone {uri} holds a {architecture} encoder, not {config.model}; train it with "
                          f"--model {architecture}")
    positions = parent_config["build"]["bert"]["max_position_embeddings"]
    if config.max_length > positions:
        raise ConfigError(f"--max-length {config.max_length} exceeds the {positions} tokens {uri} was trained on; "
                          f"pass --max-length {positions} or less")
    tokenizer = Path(parent_config["tokenizer_file"])
    if _vocabulary(tokenizer) != _vocabulary(batches_tokenizer):
        raise ConfigError(f"--backbone {uri} reads with another vocabulary than dataset {meta['dataset']} version "
                          f"{meta.get('version', '')} ({batches_tokenizer}); pre-train one on this version with "
                          f"`keel pretrain --dataset {meta['dataset']}`")
    network, build = classifier_from(parent.network, uri, len(meta["labels"]))
    # The version loaded keys the cached features: an alias that moves on means other weights.
    build["parent"] = parent_config.get("registered_version", uri)
    return network, {"architecture": architecture, "input": "text", "build": build, "pretrained": f"registry:{uri}",
                     "max_length": config.max_length, "text_column": meta.get("text_column") or "text",
                     "tokenizer_source": str(tokenizer)}
