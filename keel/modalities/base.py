"""What a kind of data (a modality) provides so that Keel can version it, check it, split it,
train on it and score it.

Pixel tables (`keel.modalities.pixels`) and image folders (`keel.modalities.images`) are the
two implementations today; the next modality (text) is a new module here plus its reader in
`keel.data` and its network in `keel.models`, not edits across the tree. Everything above this
layer (training, validation, serving, stages) asks `modality_for(...)` and calls these roles;
nothing above it tests a dataset's format.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: the roles' own modules import these at module top
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn

    from keel.core.config import DatasetConfig, TrainConfig
    from keel.data.datasets import DatasetVersion, IngestResult


class Modality(Protocol):
    """The roles of one kind of data. Implementations are stateless singletons."""

    name: str  # the `format` a version's meta.json records, e.g. "pixel-table", "image-folder"

    # -- read and version --------------------------------------------------------------
    def ingest(self, config: DatasetConfig, root: Path) -> IngestResult:
        """Reads the configured sources, checks each row, groups near-duplicates, plans the
        split and stores a content-addressed version under `root` (reused when it exists)."""

    # -- check a row --------------------------------------------------------------------
    def expectations(self, config: DatasetConfig) -> dict[str, list[dict]]:
        """The structural GX expectations of this modality, by table (schema, rows, ...)."""

    # -- group near-duplicates -----------------------------------------------------------
    def grouping_features(self, images: np.ndarray):
        """What near-duplicate grouping compares (keel.data.neardup features)."""

    # -- build a model --------------------------------------------------------------------
    def build_model(self, config: TrainConfig, meta: dict) -> tuple[nn.Module, dict]:
        """A fresh network for a version's `meta` and the record of how it was built (logged
        with the model so serving rebuilds the same network)."""

    # -- batch and augment ----------------------------------------------------------------
    def batches(self, version: DatasetVersion, indices: np.ndarray, config: TrainConfig,
                device: torch.device, generator: torch.Generator, train: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Float inputs ready for the model and class indices, on `device`; augmented and
        shuffled by `generator` when `train`."""

    # -- preprocess for serving -----------------------------------------------------------
    def preprocess(self, frame: pd.DataFrame, model_config: dict) -> torch.Tensor:
        """The rows of a scoring input as the model's uint8 N x C x H x W input."""
