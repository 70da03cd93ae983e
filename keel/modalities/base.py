"""What a kind of data (a modality) provides so that Keel can version it, check it, split it,
train on it and score it.

Pixel tables (`keel.modalities.pixels`) and image folders (`keel.modalities.images`) are the
two implementations today; the next modality (text) is a new module here plus its reader in
`keel.data` and its network in `keel.models`, not edits across the tree. Everything above this
layer (training, validation, serving, stages) asks `modality_for(...)` and calls these roles;
two places still test a version's format (docs/architecture.md names them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from keel.core.errors import ConfigError

if TYPE_CHECKING:  # annotations only: the roles' own modules import these at module top
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import torch
    from torch import nn

    from keel.core.config import DatasetConfig, TrainConfig
    from keel.data.batches import BatchSource
    from keel.data.versions import DatasetVersion, IngestResult
    from keel.modalities.prepared import Prepared
    from keel.models.transfer import ParentModel


def unfit_model(config: TrainConfig, meta: dict) -> ConfigError:
    """The error for a model of the other modality (`keel train --model` on the wrong dataset)."""
    return ConfigError(f"model {config.model} does not fit dataset {meta['dataset']}: image folders train vgg16, "
                       "resnet18, mobilenet_v3_small or efficientnet_b0 (or --backbone models:/...); pixel tables "
                       "train cnn, mlp or cnn-wide")


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
    def build_model(self, config: TrainConfig, meta: dict, parent: ParentModel | None = None) -> tuple[nn.Module, dict]:
        """A fresh network (on the CPU) for a version's `meta`, and the record of how it was
        built: the model config's `architecture` and whatever else serving needs to rebuild
        the same network (`build`, `input`, `pretrained`). `parent`: a registered model whose
        trained features start the new one, where the modality supports that."""

    # -- batch and augment ----------------------------------------------------------------
    def batches(self, version: DatasetVersion, indices: np.ndarray, config: TrainConfig,
                device: torch.device, train: bool) -> BatchSource:
        """Rows `indices` as a batch source (keel.data.batches): float inputs ready for the
        model and class indices on `device`; shuffled and augmented when `train` (by the
        loop's generator, or by one of the source's own that it checkpoints), else in order."""

    def augment(self, images: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        """Float copies of uint8 images N x C x H x W, augmented as training augments them
        (the augmentation preview shows these)."""

    # -- preprocess for serving -----------------------------------------------------------
    def preprocess(self, rows: pd.DataFrame | pa.Table, model_config: dict) -> Prepared:
        """The rows of a scoring input as the model's uint8 N x C x H x W input, for the rows
        that can be scored; each other row is refused with its problems (never raised), so
        that batch scoring reports it and a pyfunc call raises the first."""
