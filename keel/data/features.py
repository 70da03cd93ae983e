"""A frozen network's features of a version's rows, computed once and cached under Keel's home."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from keel.core import settings
from keel.core.atomic import atomic_path
from keel.data.versions import DatasetVersion


def feature_cache_path(version: DatasetVersion, build: dict, indices: np.ndarray) -> Path:
    """Where the features of rows `indices` of `version`, by the network `build` describes, are cached."""
    key = hashlib.sha256(repr((version.id, build, indices.tobytes())).encode()).hexdigest()[:16]
    return settings.home() / "data" / "features" / version.name / f"{key}.pt"


def cached_features(path: Path, compute: Callable[[], torch.Tensor], device: torch.device) -> torch.Tensor:
    """The features cached at `path` on `device`; computed by `compute()` and cached when absent."""
    if path.exists():
        return torch.load(path, map_location=device, weights_only=True)
    features = compute()
    with atomic_path(path) as tmp:
        torch.save(features.cpu(), tmp)
    return features.to(device)
