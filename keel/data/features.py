"""A frozen network's features of a version's rows, with the rows' class indices in the same
order, computed once and cached under Keel's home."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from keel.core import settings
from keel.core.atomic import atomic_path
from keel.data.versions import DatasetVersion

FEATURES_FORMAT = 2  # 1: the features alone, in sorted row order; 2: features and targets, in the batches' order


def feature_cache_path(version: DatasetVersion, build: dict, indices: np.ndarray) -> Path:
    """Where the features of rows `indices` of `version`, by the network `build` describes, are cached."""
    key = hashlib.sha256(repr((FEATURES_FORMAT, version.id, build, indices.tobytes())).encode()).hexdigest()[:16]
    return settings.home() / "data" / "features" / version.name / f"{key}.pt"


def cached_features(path: Path, compute: Callable[[], dict[str, torch.Tensor]],
                    device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors cached at `path` ("features", "targets") on `device`; computed by
    `compute()` and cached when absent."""
    if path.exists():
        return torch.load(path, map_location=device, weights_only=True)
    computed = compute()
    with atomic_path(path) as tmp:
        torch.save({name: tensor.cpu() for name, tensor in computed.items()}, tmp)
    return {name: tensor.to(device) for name, tensor in computed.items()}
