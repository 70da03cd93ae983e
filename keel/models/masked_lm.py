"""A BERT encoder with its masked-language-model head (transformers' BertForMaskedLM: the
output layer tied to the token embeddings), for pre-training on a dataset's own texts and for
the fill-in-the-blank demo; and a text classifier that starts from such an encoder.

The encoder (`encoder`: a BertModel without pooler) is the very module keel.models.text's
TextClassifier pools (`features.bert`), so its weights carry over to a classifier unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from keel.core.errors import ConfigError
from keel.data.masking import IGNORE
from keel.models.text import BERT_FIELDS, BERT_TINY, TextClassifier

TASK = "fill-mask"  # what a masked language model's record and registered version name as its task


class MaskedLanguageModel(nn.Module):
    """Token ids -> the BERT encoder -> the tied MLM head: logits over the vocabulary."""

    def __init__(self, mlm: nn.Module, pad_id: int = 0) -> None:
        super().__init__()
        self.mlm, self.pad_id = mlm, pad_id

    @property
    def encoder(self) -> nn.Module:
        """The BertModel (no pooler) a TextClassifier's `features` pools."""
        return self.mlm.bert

    def _hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states of ids [B, L] padded on the right, cut to the
        longest real text (columns of padding only are dropped first)."""
        mask = input_ids != self.pad_id
        longest = int(mask.sum(1).max()) if len(input_ids) else 0
        input_ids, mask = input_ids[:, :longest], mask[:, :longest]
        return self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        """Logits [M, V] of the M guessed tokens of a keel.data.masking batch (int64 [B, 2, L]:
        input ids, labels), in row-major order as its targets: the head runs on those alone."""
        hidden = self._hidden(packed[:, 0])
        labels = packed[:, 1, :hidden.shape[1]]
        return self.mlm.cls(hidden[labels != IGNORE])

    def token_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, L', V] at every position of ids [B, L] (L' <= L: trailing padding cut)."""
        return self.mlm.cls(self._hidden(input_ids))


def build_masked_lm(build: dict) -> MaskedLanguageModel:
    """A randomly initialised MaskedLanguageModel of the shape `build` records (its `bert`
    config): pre-training starts from it, loading fills it with trained weights."""
    from transformers import BertConfig, BertForMaskedLM  # heavy: only where a text network is built

    config = BertConfig(**build["bert"], attn_implementation="sdpa")
    return MaskedLanguageModel(BertForMaskedLM(config), build["bert"].get("pad_token_id", 0))


def bert_tiny_mlm(vocab_size: int, max_length: int) -> tuple[MaskedLanguageModel, dict]:
    """bert-tiny (keel.models.text.BERT_TINY) with its MLM head for a vocabulary of
    `vocab_size` tokens and texts of up to `max_length` tokens, from scratch; and its build record."""
    build = {"bert": {**BERT_TINY, "vocab_size": vocab_size, "max_position_embeddings": max_length},
             "pooling": "mean", "head": "tied"}
    return build_masked_lm(build), build


def pretrained_encoder(network: nn.Module, uri: str) -> nn.Module:
    """The BERT encoder of a loaded text model (a MaskedLanguageModel or a TextClassifier)."""
    if isinstance(network, MaskedLanguageModel):
        return network.encoder
    if isinstance(network, TextClassifier):
        return network.features.bert
    raise ConfigError(f"{uri} holds no BERT encoder; pass a text model registered by Keel as --backbone")


def classifier_from(network: nn.Module, uri: str, n_classes: int) -> tuple[TextClassifier, dict]:
    """A TextClassifier on a copy of `network`'s trained encoder with a new head, and its build
    record (what serving needs to rebuild it: keel.models.text.build_text_model)."""
    bert = copy.deepcopy(pretrained_encoder(network, uri)).cpu().float()
    config = bert.config.to_dict()
    build = {"bert": {k: config[k] for k in BERT_FIELDS}, "pooling": "mean"}
    return TextClassifier(bert, n_classes, config.get("pad_token_id") or 0), build
