"""What a modality (a kind of data) provides so that Keel can version it, check it, split it,
train on it, evaluate it and score it.

Pixel tables (`keel.modalities.pixels`), image folders (`keel.modalities.images`) and texts
(`keel.modalities.text`) are the implementations; each is one module here plus its reader in
`keel.data` and its network in `keel.models`. Everything above this layer (training,
validation, serving, stages) asks `modality_for(...)` and calls these roles; two places still
test a version's format (docs/architecture.md names them).
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
    """The error for a model of another modality (`keel train --model` on the wrong dataset)."""
    return ConfigError(f"model {config.model} does not fit dataset {meta['dataset']}: image folders train vgg16, "
                       "resnet18, mobilenet_v3_small or efficientnet_b0 (or --backbone models:/...); pixel tables "
                       "train cnn, mlp or cnn-wide; text datasets train minilm or bert-tiny")


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
                device: torch.device, train: bool, record: dict | None = None) -> BatchSource:
        """Rows `indices` as a batch source (keel.data.batches): inputs ready for the model
        (float images, int64 token ids) and class indices on `device`; shuffled and augmented when `train` (by the
        loop's generator, or by one of the source's own that it checkpoints), else in order.
        `record`: how the network was built (build_model's), e.g. the tokenizer a text model reads with."""

    def augment(self, inputs: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        """Float copies of uint8 images N x C x H x W, augmented as training augments them
        (the augmentation preview shows these); texts are not augmented (returned as given)."""

    # -- evaluate ---------------------------------------------------------------------------
    def examples(self, version: DatasetVersion, indices: np.ndarray) -> pd.DataFrame:
        """Stored rows `indices` as a scoring input takes them (pixel columns, a `path` column of
        photo files, the text column): the logged model's input example."""

    def model_inputs(self, version: DatasetVersion, indices: np.ndarray, model_config: dict) -> torch.Tensor:
        """What the model scores for stored rows `indices`, in sorted row order (as their
        targets): uint8 images N x C x H x W, or int64 token ids N x L padded with 0 (tokenized
        with `model_config`'s tokenizer_file and max_length)."""

    def worst_classified(self, version: DatasetVersion, indices: np.ndarray, probabilities: np.ndarray,
                         class_names: list[str], path: Path) -> list[Path]:
        """The files showing the rows (`indices`, in sorted order as `probabilities`) whose true
        class got the lowest probability: `path` with the modality's suffixes (images: a PNG
        grid; texts: a markdown and a CSV table of true, predicted, confidence and the text cut
        to 200 characters), the one to show first."""

    # -- preprocess for serving -----------------------------------------------------------
    def preprocess(self, rows: pd.DataFrame | pa.Table, model_config: dict) -> Prepared:
        """The rows of a scoring input as the model's input (uint8 N x C x H x W images, or
        int64 token ids), for the rows that can be scored; each other row is refused with its
        problems (never raised), so that batch scoring reports it and a pyfunc call raises the
        first."""
