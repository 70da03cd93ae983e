"""The text modality (keel.modalities.base.Modality): messages, posts, tickets with a label.

A text dataset is CSV (gzip or not), parquet or JSONL with a text column and a label column
(keel.data.text_table); ingest quarantines what keel.data.text_rule refuses, groups
near-duplicate texts (keel.data.textdups) and trains a WordPiece vocabulary on the training
rows only (keel.data.tokenizer). Models are BERT-family encoders (keel.models.text).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from keel.core.config import DatasetConfig, TrainConfig
from keel.data.versions import DatasetVersion, IngestResult
from keel.data.neardup import GroupingFeatures
from keel.data.text_batches import TokenBatches
from keel.data.textdups import TextFeatures
from keel.models.transfer import ParentModel
from keel.modalities.prepared import Prepared
from keel.modalities.text_ingest import ingest_text, text_expectations
from keel.modalities.text_preprocess import prepare_texts
from keel.modalities.text_training import build_text, text_batches, text_model_inputs
from keel.modalities.worst import text_table


class TextModality:
    name = "text"

    # -- read and version
    def ingest(self, config: DatasetConfig, root: Path) -> IngestResult:
        """Reads the text files, quarantines unusable records with their reasons, splits in whole
        near-duplicate groups, trains the WordPiece vocabulary on the training part only and
        stores the version (keel.modalities.text_ingest); reused when unchanged."""
        return ingest_text(config, root)

    # -- check a row
    def expectations(self, config: DatasetConfig) -> dict[str, list[dict]]:
        """Each record's text_rule checks and known label, no text in two splits, the row count,
        and the classes near a uniform share."""
        return text_expectations(config)

    # -- group near-duplicates
    def grouping_features(self, texts, ngram_words: int = 3) -> GroupingFeatures:
        """Hashed word 1..`ngram_words`-grams of the texts (keel.data.textdups.TextFeatures)."""
        return TextFeatures(ngram_words).grouping(texts)

    # -- rows as a scoring input takes them
    def examples(self, version: DatasetVersion, indices: np.ndarray) -> pd.DataFrame:
        """The stored texts of rows `indices`, in the dataset's text column."""
        texts = version.texts()
        return pd.DataFrame({version.meta["text_column"]: [texts[int(i)] for i in np.asarray(indices).ravel()]})

    # -- build a model
    def build_model(self, config: TrainConfig, meta: dict, parent: ParentModel | None = None) -> tuple[nn.Module, dict]:
        """minilm: the packaged all-MiniLM-L6-v2 encoder with a new head; bert-tiny: a 2-layer
        BERT on the version's vocabulary, from scratch (keel.modalities.text_training). The
        record also names the tokenizer file (`tokenizer_source`) the model reads with."""
        return build_text(config, meta, parent)

    # -- batch and augment
    def batches(self, version: DatasetVersion, indices: np.ndarray, config: TrainConfig, device: torch.device,
                train: bool, record: dict | None = None) -> TokenBatches:
        """Rows `indices` as token ids (the tokenizer of the model `record` describes -- a
        backbone's own -- else of `config.model`; `config.max_length` tokens), each batch padded
        to its longest text: length-bucketed and shuffled by the loop's generator when `train`,
        else in length order."""
        return text_batches(version, indices, config, device, train, record)

    def augment(self, inputs: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        """Texts are not augmented: the token ids as given."""
        return inputs

    # -- evaluate
    def model_inputs(self, version: DatasetVersion, indices: np.ndarray, model_config: dict) -> torch.Tensor:
        """Rows `indices` (sorted) as int64 token ids, tokenized as the model reads them."""
        return text_model_inputs(version, indices, model_config)

    def worst_classified(self, version: DatasetVersion, indices: np.ndarray, probabilities: np.ndarray,
                         class_names: list[str], path: Path) -> list[Path]:
        """A markdown and a CSV table of the worst-classified texts (keel.modalities.worst)."""
        return text_table(version, indices, probabilities, class_names, path)

    # -- preprocess for serving
    def preprocess(self, rows: pd.DataFrame | pa.Table, model_config: dict) -> Prepared:
        """Texts (the model's text column) as int64 token ids of the usable ones; a missing,
        non-string, empty, undecodable, mojibake or control-character text is refused with its
        reason, a text over the model's max_length truncated and noted (keel.modalities.text_preprocess)."""
        return prepare_texts(rows, model_config)


TEXT = TextModality()
