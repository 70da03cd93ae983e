"""The kinds of data Keel reads, checks, trains on and scores: one small set of roles
(keel.modalities.base.Modality) with one implementation per kind.

`modality_for(...)` picks the implementation for a dataset config, a stored version, a
version's meta.json or a logged model config; `ingest(config)` stores (or reuses) a dataset
version through its modality. Nothing above this layer tests a dataset's format itself.
"""

from __future__ import annotations

from pathlib import Path

from keel.core import settings
from keel.core.config import DatasetConfig
from keel.data.versions import DatasetVersion, IngestResult
from keel.modalities.base import Modality
from keel.modalities.images import IMAGE_FOLDER
from keel.modalities.pixels import PIXEL_TABLE
from keel.modalities.text import TEXT

MODALITIES: dict[str, Modality] = {m.name: m for m in (PIXEL_TABLE, IMAGE_FOLDER, TEXT)}
# A dataset config's `format` (recorded in each version's meta.json) -> the modality that reads it.
FORMATS: dict[str, Modality] = {"csv": PIXEL_TABLE, "idx": PIXEL_TABLE, "parquet": PIXEL_TABLE,
                                "image-folder": IMAGE_FOLDER, "text": TEXT}


def modality_for(kind_or_config: DatasetConfig | DatasetVersion | dict | str) -> Modality:
    """The modality of a dataset config, a stored version, a version's meta (its `format`),
    a model config as logged with a model (`input: image` for photos, `input: text` for texts;
    pixel rows otherwise),
    or named by its name ("pixel-table", "image-folder") or a dataset format ("csv", ...)."""
    kind = kind_or_config
    if isinstance(kind, DatasetConfig):
        kind = kind.format
    elif isinstance(kind, DatasetVersion):
        kind = kind.meta["format"]
    elif isinstance(kind, dict):
        kind = kind["format"] if "format" in kind else {"image": "image-folder", "text": "text"}.get(kind.get("input"), "pixel-table")
    modality = MODALITIES.get(kind) or FORMATS.get(kind)
    if modality is None:
        raise ValueError(f"no modality reads {kind!r}; known: {', '.join([*MODALITIES, *FORMATS])}")
    return modality


def ingest(config: DatasetConfig, root: Path | None = None) -> IngestResult:
    """Reads the config's files and stores them as a dataset version under `root` (default:
    the Keel home's data/versions), or reuses an identical one."""
    return modality_for(config).ingest(config, Path(root) if root else settings.versions_dir())
