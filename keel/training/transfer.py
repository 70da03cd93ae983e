"""The transfer-learning recipe: two phases of the one training loop.

Phase 1 freezes the backbone and trains the head on the backbone's features, computed once
per (dataset version, backbone, weights, image size or text length, rows) and cached, so it
costs seconds. Phase 2 unfreezes the backbone (all of it, or its last blocks) and fine-tunes
everything with a smaller learning rate on the modality's training batches (augmented photos,
or texts). Without pretrained weights, phase 2 uses the full learning rate (a 10x smaller one
would only slow training from scratch). Early stopping watches phase 2 only.
"""

from __future__ import annotations

import numpy as np
import torch

from keel.core.config import TrainConfig
from keel.data.batches import BatchSource, TensorBatches
from keel.data.features import cached_features, feature_cache_path
from keel.data.versions import DatasetVersion
from keel.modalities.base import Modality
from keel.models.device import autocast
from keel.models.text import TextClassifier
from keel.models.transfer import TransferNet, freeze
from keel.training.phases import Phase

LABEL_SMOOTHING = 0.1


@torch.no_grad()
def embed(model: TransferNet | TextClassifier, source: BatchSource, device: torch.device,
          precision: str) -> dict[str, torch.Tensor]:
    """The frozen backbone's features (float32) of every batch of `source` and the batches'
    class indices, in the order the source yields them (texts: by length)."""
    model.eval()
    features, targets = [], []
    for inputs, batch_targets in source.epoch(None):
        with autocast(device, precision):
            features.append(model.embed(inputs).float())
        targets.append(batch_targets)
    return {"features": torch.cat(features), "targets": torch.cat(targets)}


def _head(model: TransferNet, features: torch.Tensor) -> torch.Tensor:
    return model.head(features)


def transfer_phases(model: TransferNet, record: dict, modality: Modality, version: DatasetVersion,
                    fit_idx: np.ndarray, config: TrainConfig, device: torch.device,
                    precision: str) -> tuple[list[Phase], str]:
    """The head phase and the fine-tuning phase of `model` on rows `fit_idx`, and the file the
    head phase's features are cached in."""
    # Texts: the features depend on the truncation length too.
    key = record["build"] | {"pretrained": record["pretrained"]} | {k: record[k] for k in ("max_length",) if k in record}
    cache = feature_cache_path(version, key, fit_idx)

    def head_batches() -> BatchSource:
        cached = cached_features(cache, lambda: embed(
            model, modality.batches(version, fit_idx, config, device, train=False, record=record), device, precision),
            device)
        return TensorBatches(cached["features"], cached["targets"], config.batch_size, device, lambda x, _: x, shuffle=True)

    factor = config.fine_tune_lr_factor
    if factor is None:
        factor = 1.0 if record["pretrained"] == "none" else 0.1
    head = Phase(name="head", epochs=config.head_epochs, learning_rate=config.learning_rate, batches=head_batches,
                 parameters=lambda m: freeze(m, None), forward=_head, one_cycle=False,
                 label_smoothing=LABEL_SMOOTHING, autocast=False, early_stopping=False, metrics={"phase": 1})
    fine_tune = Phase(name="fine-tune", epochs=config.epochs, learning_rate=config.learning_rate * factor,
                      batches=lambda: modality.batches(version, fit_idx, config, device, train=True, record=record),
                      parameters=lambda m: freeze(m, config.unfreeze), label_smoothing=LABEL_SMOOTHING,
                      metrics={"phase": 2})
    return [head, fine_tune], str(cache)
