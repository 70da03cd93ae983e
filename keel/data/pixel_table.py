"""The parts of a pixel-table version (CSV, parquet and IDX sources, plus the curated batches):
reading and hashing the configured sources, parsing them, deciding whether the rows can be
stored as images, and what meta.json records of them. The pixel-table modality
(keel.modalities.pixels) puts them together into a version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig, SourceFile
from keel.core.errors import DatasetError
from keel.core.io import decompress, read_bytes, verify_sha256
from keel.core.secrets import redact
from keel.data.curated import curated_batches, curated_sources
from keel.data.idx import parse_idx_array, parse_idx_pair
from keel.data.pixel_rule import VALID_PIXEL, invalid_rows
from keel.data.profile import ParsedTable, empty_profile
from keel.data.tables import parse_pixel_csv, parse_pixel_parquet
from keel.data.versions import source_name


@dataclass
class RawSource:
    """One configured source as read: its split, bytes (still compressed), labels file bytes
    (IDX) and their sha256."""

    split: str
    source: SourceFile
    data: bytes
    labels_data: bytes | None
    hashes: dict  # split, sha256, labels_sha256: what the version id is made of


def read_sources(config: DatasetConfig) -> list[RawSource]:
    """Every training and test source of the config and every curated batch, read and checked
    against its configured sha256."""
    sources = [("train", s) for s in config.train] + [("test", s) for s in config.test]
    sources += [("train", s) for s in curated_sources(config.name)]
    raw = []
    for split, source in sources:
        url = config.resolve(source.path)
        data = read_bytes(url)
        digest = verify_sha256(url, data, source.sha256)
        labels_data, labels_digest = None, None
        if source.labels_path:
            labels_url = config.resolve(source.labels_path)
            labels_data = read_bytes(labels_url)
            labels_digest = verify_sha256(labels_url, labels_data, source.labels_sha256)
        raw.append(RawSource(split, source, data, labels_data,
                             {"split": split, "sha256": digest, "labels_sha256": labels_digest}))
    return raw


def parse_source(config: DatasetConfig, raw: RawSource) -> ParsedTable:
    """One source's rows with their profile (file and source filled in); a group column the
    file lacks, or lines the CSV parser could not split, are a DatasetError."""
    url = config.resolve(raw.source.path)
    fmt = raw.source.format or config.format
    if fmt == "csv":
        table = parse_pixel_csv(url, decompress(url, raw.data), config, raw.split)
    elif fmt == "parquet":
        table = parse_pixel_parquet(url, raw.data, config, raw.split)
    else:
        labels_url = config.resolve(raw.source.labels_path)
        images = parse_idx_array(url, decompress(url, raw.data))
        labels = parse_idx_array(labels_url, decompress(labels_url, raw.labels_data))
        table = parse_idx_pair(url, images, labels, labels_url, config, raw.split)
    if config.group_column and config.group_column not in table.header and table.header:
        raise DatasetError(f"{config.where}: group_column '{config.group_column}' is not a column of {url} "
                           f"(its columns start {', '.join(table.header[:4])}); fix group_column or remove it")
    if table.skipped:
        first = table.skipped[0]
        raise DatasetError(f"{url}: line {first['line']} has {first['fields']} fields but the header has "
                           f"{first['expected']} ({len(table.skipped)} such lines); fix or remove them")
    table.profile["source"] = raw.hashes["sha256"][:12]
    table.profile["file"] = source_name(url)
    return table


def combined_profile(tables: list[ParsedTable]) -> pd.DataFrame:
    return pd.concat([t.profile for t in tables], ignore_index=True) if tables else empty_profile()


def images_missing_reason(config: DatasetConfig, tables: list[ParsedTable], profile: pd.DataFrame) -> str | None:
    """Why the rows cannot become uint8 images and class labels (None when they can)."""
    if not len(profile):
        return "the input has no rows"
    if any(t.pixels is None for t in tables):
        return f"the columns are not {config.label_column}, {config.pixel_prefix}1..{config.pixel_prefix}{config.image.n_pixels}"
    bad = invalid_rows(profile)
    if bad.any():
        return f"{int(bad.sum())} rows have pixels that break the rule ({VALID_PIXEL})"
    known = set(config.labels)
    if not all(isinstance(v, (int, np.integer)) and int(v) in known for v in profile["label"]):
        return "some labels are missing or not among the configured classes"
    return None


def stacked_images(config: DatasetConfig, tables: list[ParsedTable]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of every table as uint8 N x H x W x C images and their raw labels."""
    shape = config.image
    images = np.concatenate([t.pixels for t in tables]).astype(np.uint8)
    labels = np.concatenate([t.labels.to_numpy(dtype=np.int64) for t in tables])
    return images.reshape(len(images), shape.height, shape.width, shape.channels), labels


def row_ids(profile: pd.DataFrame) -> np.ndarray:
    """A stable id per row: its source's hash and its line."""
    return (profile["source"] + ":" + profile["line"].astype(str)).to_numpy()


def stored_profile(profile: pd.DataFrame) -> pd.DataFrame:
    """The profile as stored: labels as text, so a stray "x" does not change how the good labels compare."""
    stored = profile.copy()
    stored["label"] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in profile["label"]]
    return stored


def table_meta(config: DatasetConfig, raw: list[RawSource], tables: list[ParsedTable]) -> dict:
    """What a pixel-table version's meta.json records of its sources and columns."""
    return {
        # Named without credentials (a URL's password, a signed query): the sha256 identifies the content.
        "sources": [{"split": r.split, "path": redact(config.resolve(r.source.path)), "sha256": r.hashes["sha256"],
                     "labels_path": redact(config.resolve(r.source.labels_path)) if r.source.labels_path else None,
                     "labels_sha256": r.hashes["labels_sha256"]} for r in raw],
        "header": tables[0].header if tables else [],
        "non_integer_columns": {c: k for t in tables for c, k in t.kinds.items()},
        "headers_differ": [source_name(config.resolve(r.source.path)) for t, r in zip(tables, raw)
                           if t.header != tables[0].header],
        "rows": int(sum(len(t.profile) for t in tables)),
        "group_column": config.group_column,
        "curated_batches": curated_batches(config.name),
    }
