"""A text classifier that starts from a registered text model's encoder (`keel train --backbone
models:/NAME@alias` on a text dataset): a masked language model `keel pretrain` registered, or
another Keel text classifier. The new classifier reads with the parent's tokenizer: its token
ids mean what the encoder learnt them to mean.
"""

from __future__ import annotations

from torch import nn

from keel.core.config import TrainConfig
from keel.core.errors import ConfigError
from keel.models.masked_lm import classifier_from
from keel.models.transfer import ParentModel


def text_from_parent(config: TrainConfig, meta: dict, parent: ParentModel) -> tuple[nn.Module, dict]:
    """A classifier for a text version's `meta` on a copy of `parent`'s encoder with a new head,
    and its record (tokenizer_source: the parent's tokenizer, which the training batches then
    read with, whichever version or dataset the parent was pre-trained on)."""
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
    tokenizer = parent_config["tokenizer_file"]
    network, build = classifier_from(parent.network, uri, len(meta["labels"]))
    # The version loaded keys the cached features: an alias that moves on means other weights.
    build["parent"] = parent_config.get("registered_version", uri)
    return network, {"architecture": architecture, "input": "text", "build": build, "pretrained": f"registry:{uri}",
                     "max_length": config.max_length, "text_column": meta.get("text_column") or "text",
                     "tokenizer_source": str(tokenizer)}
