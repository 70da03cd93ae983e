"""Content-addressed dataset versions: the id, the metadata, the one writer of a version
folder, and reading one back.

A version folder (`<versions>/<dataset>/<id>/`) holds:
- ``meta.json``: a VersionMeta -- sources with sha256, header, shape, classes, the split's
  figures and leakage;
- ``profile.parquet``: one row per input row or file -- what validation checks;
- ``images.npy`` (uint8, N x H x W x C), ``labels.npy`` (raw label values), ``groups.npy``
  and ``{train,evaluation,test}_idx.npy``, written only when every row can be an image, so
  training can never read a malformed table;
- image folders also ``quarantine.csv`` (the files set aside, with their reasons);
- text versions no images.npy but ``texts.parquet`` (the stored texts and ids),
  ``quarantine.csv`` and ``tokenizer.json`` (a WordPiece vocabulary of the training rows).
Every modality stores its versions through `store_version`, and nothing else writes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from keel.core.atomic import atomic_dir
from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.data.splits import GROUPING_FORMAT, SplitPlan, holdout

INGEST_FORMAT = 3  # bump when the stored layout changes, so old versions are not reused
PARTS = ("train", "evaluation", "test")


class VersionMeta(BaseModel):
    """What a version's meta.json says. Fields a modality does not write are absent from its
    file (an image folder has no group column, a pixel table no quarantined files)."""

    model_config = ConfigDict(extra="allow")

    dataset: str
    version: str
    ingest_format: int
    created: str
    format: str  # the dataset config's format: csv, idx, parquet, image-folder or text
    sources: list[dict]  # split, path (credentials removed) and sha256 of every source
    header: list[str] = []
    non_integer_columns: dict[str, str] = {}  # pixel columns that do not read as integers: their kind
    headers_differ: list[str] = []  # source files whose header differs from the first one's
    rows: int
    image: dict | None  # the stored shape: height, width, channels (None for text)
    label_column: str
    labels: list[int]  # raw label values in class-index order
    class_names: list[str]
    evaluation_split: dict  # the configured rule; once images are stored, the split as drawn
    group_column: str | None = None
    curated_batches: list[dict] = []
    images_stored: bool
    images_missing_reason: str | None = None
    # The split, when images are stored (SplitPlan.figures).
    train_rows: int | None = None
    evaluation_rows: int | None = None
    test_rows: int | None = None
    evaluation_ids_sha256: str | None = None
    split_description: str | None = None
    leakage: dict | None = None
    grouping_format: int | None = None
    # Image folders: files listed, quarantined and converted, hidden names skipped.
    files: int | None = None
    quarantined: int | None = None
    converted: int | None = None
    hidden_skipped: int | None = None
    hidden_files: list[str] | None = None
    # Text: the dataset's text column, the tokenizer file in the version folder, its vocabulary
    # size, and quantiles of the training rows' token counts ("p0".."p100").
    text_column: str | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    token_lengths: dict | None = None

    @classmethod
    def describe(cls, config: DatasetConfig, version: str, **fields) -> VersionMeta:
        """The metadata of version `version` of `config`'s dataset: what every modality records
        from the config, plus its own `fields` (the split as drawn replaces the configured rule)."""
        common = {"dataset": config.name, "version": version, "ingest_format": INGEST_FORMAT,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(), "format": config.format,
                  "image": config.image.model_dump() if config.image else None, "label_column": config.label_column, "labels": config.labels,
                  "class_names": config.class_names, "evaluation_split": config.evaluation_split.model_dump()}
        return cls(**{**common, **fields})


def version_id(config: DatasetConfig, **content) -> str:
    """The content address: a modality's `content` (its sources' hashes and the settings that
    change what it stores) plus the settings every version depends on."""
    key = {
        "ingest_format": INGEST_FORMAT,
        "format": config.format,
        "image": config.image.model_dump() if config.image else None,
        "evaluation_split": config.evaluation_split.model_dump(),
        "grouping_format": GROUPING_FORMAT,
        **content,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def source_name(url: str) -> str:
    """How a stored version names a source file: its name, without a URL's query (which may
    carry a signature or token) or credentials."""
    return Path(urlsplit(url).path if "://" in url else url).name


@dataclass
class DatasetVersion:
    """A stored, content-addressed dataset version."""

    path: Path

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.path / "meta.json").read_text())

    @cached_property
    def info(self) -> VersionMeta:
        """The meta.json as a VersionMeta."""
        return VersionMeta.model_validate(self.meta)

    @property
    def id(self) -> str:
        return self.meta["version"]

    @property
    def name(self) -> str:
        return self.meta["dataset"]

    @property
    def images_stored(self) -> bool:
        return self.meta["images_stored"]

    def profile(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "profile.parquet")

    def images(self) -> np.ndarray:
        if self.meta["format"] == "text":
            raise DatasetError(f"dataset version {self.id} holds texts, not images; read them with texts()")
        if not self.images_stored:
            raise DatasetError(f"dataset version {self.id} has no images: {self.meta['images_missing_reason']}")
        return np.load(self.path / "images.npy", mmap_mode="r")

    def texts(self) -> list[str]:
        """A text version's stored texts, in stored order (the order of labels and indices)."""
        return pd.read_parquet(self.path / "texts.parquet", columns=["text"])["text"].tolist()

    @property
    def tokenizer_path(self) -> Path:
        """A text version's WordPiece tokenizer (trained on its training rows only)."""
        return self.path / (self.meta.get("tokenizer") or "tokenizer.json")

    def labels(self) -> np.ndarray:
        return np.load(self.path / "labels.npy")

    def indices(self, part: str) -> np.ndarray:
        """Row indices of 'train', 'evaluation' or 'test'."""
        return np.load(self.path / f"{part}_idx.npy")

    def groups(self) -> np.ndarray | None:
        """Each stored row's group (near-duplicates, or the group column's values)."""
        path = self.path / "groups.npy"
        return np.load(path) if path.exists() else None

    @property
    def split_description(self) -> str:
        """Which split the evaluation figures come from, in words ("" when no split was drawn:
        the rows could not be stored as images)."""
        return self.meta.get("split_description", "")

    @property
    def leakage(self) -> dict[str, dict]:
        """Per held-out part ("evaluation", "test"): rows, near-copy share, 1-NN accuracy, examples."""
        return {part: figures for part, figures in (self.meta.get("leakage") or {}).items() if part in ("evaluation", "test")}

    def classes(self, config: DatasetConfig) -> DatasetConfig:
        """`config` with the classes this version was stored with (an image folder's classes are
        read from its class folders at ingest, not when the config loads)."""
        return config if config.classes else config.with_classes(self.meta["class_names"])


@dataclass
class IngestResult:
    version: DatasetVersion
    reused: bool


def existing_version(root: Path, config: DatasetConfig, vid: str) -> tuple[Path, IngestResult | None]:
    """Where version `vid` of the dataset lives under `root`, and the version when it is stored already."""
    target = Path(root) / config.name / vid
    return target, (IngestResult(DatasetVersion(target), reused=True) if (target / "meta.json").exists() else None)


@dataclass
class StoredImages:
    """What a version stores when its rows can be images: uint8 N x H x W x C images, raw
    label values, and the split drawn on them. Text versions store no images (None): their
    texts come as a file of `store_version`."""

    images: np.ndarray | None
    labels: np.ndarray
    plan: SplitPlan


def store_version(target: Path, meta: VersionMeta, profile: pd.DataFrame, stored: StoredImages | None = None,
                  csv_files: dict[str, pd.DataFrame] | None = None,
                  files: dict[str, Callable[[Path], None]] | None = None) -> IngestResult:
    """Writes a version folder at `target` atomically: the profile, `csv_files` (name -> frame),
    `files` (name -> a function that writes that file at the path it is given, e.g. a text
    version's texts.parquet and tokenizer.json), the images, labels, groups and split indices
    when `stored`, and meta.json. The one writer of a version; if another process stored the
    same version meanwhile, its copy wins."""
    with atomic_dir(target) as tmp:
        profile.to_parquet(tmp / "profile.parquet", index=False)
        for name, frame in (csv_files or {}).items():
            frame.to_csv(tmp / name, index=False)
        for name, write in (files or {}).items():
            write(tmp / name)
        if stored is not None:
            if stored.images is not None:
                np.save(tmp / "images.npy", stored.images)
            np.save(tmp / "labels.npy", stored.labels)
            np.save(tmp / "groups.npy", stored.plan.groups)
            for part in PARTS:
                np.save(tmp / f"{part}_idx.npy", stored.plan.indices(part))
        (tmp / "meta.json").write_text(json.dumps(meta.model_dump(mode="json", exclude_unset=True), indent=2))
    return IngestResult(DatasetVersion(target), reused=False)


def group_holdout(version: DatasetVersion, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions within `indices` of a stratified `fraction` of those rows, in whole groups when
    the version has groups: the early-stopping slice carved from training (a near-copy of a
    validation row among the fitted rows would make early stopping wait for memorisation), or
    half of the evaluation rows (the anomaly threshold's calibration)."""
    groups = version.groups()
    return holdout(version.labels()[indices], None if groups is None else groups[indices], fraction, seed)


def class_indices(labels: np.ndarray, configured: list[int]) -> np.ndarray:
    """Raw label values mapped to class indices (the configured labels in sorted order)."""
    lookup = {label: i for i, label in enumerate(configured)}
    return np.array([lookup[int(v)] for v in labels], dtype=np.int64) if len(labels) else np.array([], dtype=np.int64)
