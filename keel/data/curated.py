"""Curated data: the accepted incoming batches that join a dataset's training data, listed in
a manifest beside their clean parquet files (written by keel.validation.incoming.curate_batch)."""

from __future__ import annotations

import json
from pathlib import Path

from keel.core import settings
from keel.core.config import SourceFile


def curated_manifest(dataset: str) -> Path:
    """The list of accepted incoming batches that join a dataset's training data."""
    return settings.curated_dir() / dataset / "manifest.json"


def curated_batches(dataset: str) -> list[dict]:
    """The accepted batches of `dataset`, oldest first, each with its validation result."""
    path = curated_manifest(dataset)
    return json.loads(path.read_text())["batches"] if path.exists() else []


def curated_sources(dataset: str) -> list[SourceFile]:
    """The clean files of the accepted batches, as training sources."""
    folder = curated_manifest(dataset).parent
    return [SourceFile(path=str(folder / b["file"]), sha256=b["sha256"], format="parquet") for b in curated_batches(dataset)]
