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
import torch
from torch import nn

from keel.core.config import DatasetConfig, TrainConfig
from keel.data.versions import DatasetVersion, IngestResult
from keel.models.transfer import ParentModel
from keel.modalities.prepared import Prepared


class TextModality:
    name = "text"

    # -- read and version (H1)
    def ingest(self, config: DatasetConfig, root: Path) -> IngestResult:
        raise NotImplementedError("H1")

    # -- check a row (H1)
    def expectations(self, config: DatasetConfig) -> dict[str, list[dict]]:
        raise NotImplementedError("H1")

    # -- group near-duplicates (H1)
    def grouping_features(self, texts):
        raise NotImplementedError("H1")

    # -- rows as a scoring input takes them (H1)
    def examples(self, version: DatasetVersion, indices: np.ndarray) -> pd.DataFrame:
        raise NotImplementedError("H1")

    # -- build a model (H2)
    def build_model(self, config: TrainConfig, meta: dict, parent: ParentModel | None = None) -> tuple[nn.Module, dict]:
        raise NotImplementedError("H2")

    # -- batch and augment (H2)
    def batches(self, version: DatasetVersion, indices: np.ndarray, config: TrainConfig, device: torch.device,
                train: bool):
        raise NotImplementedError("H2")

    def augment(self, inputs: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError("H2")

    def model_inputs(self, version: DatasetVersion, indices: np.ndarray, model_config: dict) -> torch.Tensor:
        raise NotImplementedError("H2")

    # -- preprocess for serving (H3)
    def preprocess(self, rows: pd.DataFrame, model_config: dict) -> Prepared:
        raise NotImplementedError("H3")


TEXT = TextModality()
