"""Training a network on a dataset version: the modality builds the network and its batches,
the recipe picks the phases (one for a network trained from scratch, two for one that starts
from trained features: transfer learning), and the one loop (keel.training.loop) runs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from keel.core.config import TrainConfig
from keel.data.batches import BatchSource, TensorSplit, holdout_indices
from keel.data.versions import DatasetVersion
from keel.modalities import modality_for
from keel.modalities.pixels import PIXEL_TABLE
from keel.models.device import select_precision
from keel.models.transfer import ParentModel
from keel.training.distributed import only_pixel_tables, ranks
from keel.training.loop import EpochCallback, TrainResult, run_phases
from keel.training.phases import Phase
from keel.training.transfer import transfer_phases


def single_phase(config: TrainConfig, batches: Callable[[], BatchSource]) -> Phase:
    """Every parameter trains for up to `config.epochs` epochs on a one-cycle schedule that the
    time budget plans, with early stopping."""
    return Phase(name="train", epochs=config.epochs, learning_rate=config.learning_rate, batches=batches,
                 label_smoothing=config.label_smoothing, budgeted=True)


def starts_trained(config: TrainConfig, record: dict) -> bool:
    """Whether the network starts from trained features and so trains in two phases (its head
    on cached features, then fine-tuning): a backbone or --backbone, or pretrained weights."""
    return config.transfer or record.get("pretrained") not in (None, "none")


def _start(model: nn.Module, config: TrainConfig, device: torch.device) -> tuple[nn.Module, str]:
    return model.to(device).to(memory_format=torch.channels_last), select_precision(config.precision, device)


def train(version: DatasetVersion, config: TrainConfig, device: torch.device,
          checkpoint_path: Path | None = None, on_epoch_end: EpochCallback | None = None,
          progress: bool | None = None, parent: ParentModel | None = None) -> TrainResult:
    """Trains `config.model` on the training rows of `version` minus a validation slice for
    early stopping, and returns the best epoch's network with how it was built (`record`).
    `parent`: a registered model (loaded by the caller) whose features start a transfer model."""
    modality = modality_for(version)
    torch.manual_seed(config.seed)
    network, record = modality.build_model(config, {**version.meta, "path": str(version.path)}, parent)
    model, precision = _start(network, config, device)
    fit_idx, val_idx = holdout_indices(version, config)
    validation = modality.batches(version, val_idx, config, device, train=False, record=record)
    if starts_trained(config, record):
        if ranks().world > 1:  # the head phase's forward skips the DistributedDataParallel wrapper
            raise only_pixel_tables(ranks().world)
        phases, feature_cache = transfer_phases(model, record, modality, version, fit_idx, config, device, precision)
    else:
        fitted = lambda: modality.batches(version, fit_idx, config, device, train=True, record=record)  # noqa: E731
        phases, feature_cache = [single_phase(config, fitted)], ""
    result = run_phases(model, phases, validation, config, device, precision, checkpoint_path, on_epoch_end, progress)
    return replace(result, record=record, feature_cache=feature_cache)


def fit(train: TensorSplit, validation: TensorSplit, n_classes: int, config: TrainConfig,
        checkpoint_path: Path | None = None, on_epoch_end: EpochCallback | None = None,
        progress: bool | None = None) -> TrainResult:
    """`train` for pixel images already loaded as tensors on the training device (benchmarks
    draw splits of their own): the same network, batches and loop."""
    device = train.images.device
    _, channels, height, width = train.images.shape
    meta = {"image": {"channels": channels, "height": height, "width": width}, "labels": list(range(n_classes)),
            "dataset": "of the given tensors"}
    torch.manual_seed(config.seed)
    network, record = PIXEL_TABLE.build_model(config, meta)
    model, precision = _start(network, config, device)
    phases = [single_phase(config, lambda: PIXEL_TABLE.tensor_batches(train, config, device, train=True))]
    held_out = PIXEL_TABLE.tensor_batches(validation, config, device, train=False)
    result = run_phases(model, phases, held_out, config, device, precision, checkpoint_path, on_epoch_end, progress)
    return replace(result, record=record)
