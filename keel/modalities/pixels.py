"""The pixel-table modality (keel.modalities.base.Modality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

import torch
from torch import nn

from keel.core.config import TEXT_MODELS, DatasetConfig, TrainConfig
from keel.data.augment import augment_batch
from keel.data.batches import TensorBatches, TensorSplit, load_split, to_float
from keel.data.neardup import GroupingFeatures, PixelFeatures
from keel.data.pixel_rule import PIXEL_CHECKS, PIXEL_MAX, PIXEL_MIN, invalid_pixels, pixel_problems
from keel.data.pixel_table import (combined_profile, images_missing_reason, parse_source, read_sources, row_ids,
                                   stacked_images, stored_profile, table_meta)
from keel.data.splits import plan_split
from keel.data.tables import pixel_matrix
from keel.data.versions import (DatasetVersion, IngestResult, StoredImages, VersionMeta, existing_version,
                                store_version, version_id)
from keel.modalities.base import unfit_model
from keel.modalities.expectations import class_expectations, expectation
from keel.modalities.worst import image_grid
from keel.models.networks import build_model
from keel.models.transfer import ParentModel
from keel.modalities.prepared import Prepared, prepared, refused


class PixelTable:
    name = "pixel-table"

    # -- read and version
    def ingest(self, config: DatasetConfig, root: Path) -> IngestResult:
        """Reads the CSV, parquet or IDX sources and the curated batches and stores them as a
        version: always the per-row profile, the images only when every row is a valid image."""
        raw = read_sources(config)
        vid = version_id(config, sources=[r.hashes for r in raw], label_column=config.label_column,
                         pixel_prefix=config.pixel_prefix, group_column=config.group_column)
        target, existing = existing_version(root, config, vid)
        if existing:
            return existing
        tables = [parse_source(config, r) for r in raw]
        profile = combined_profile(tables)
        reason = images_missing_reason(config, tables, profile)
        stored, figures = None, {}
        if reason is None:
            images, labels = stacked_images(config, tables)
            parts = np.where(profile["split"] == "test", "test", "pool")
            plan = plan_split(config, self.grouping_features(images), labels, parts,
                              profile["group"].to_numpy() if config.group_column else None)
            stored, figures = StoredImages(images, labels, plan), plan.figures(row_ids(profile))
        meta = VersionMeta.describe(config, vid, **table_meta(config, raw, tables), images_stored=reason is None,
                                    images_missing_reason=reason, **figures)
        return store_version(target, meta, stored_profile(profile), stored)

    # -- check a row
    def expectations(self, config: DatasetConfig) -> dict[str, list[dict]]:
        """The schema (one row per column), each row's label and pixels (keel.data.pixel_rule),
        and the classes near a uniform share."""
        return {"schema": _schema_expectations(config), "rows": _row_expectations(config),
                "classes": class_expectations()}

    # -- group near-duplicates
    def grouping_features(self, images: np.ndarray) -> GroupingFeatures:
        """Mean-centred, downsampled pixels of the stored images (keel.data.neardup.PixelFeatures)."""
        return PixelFeatures().grouping(images)

    # -- build a model
    def build_model(self, config: TrainConfig, meta: dict, parent: ParentModel | None = None) -> tuple[nn.Module, dict]:
        """The course network `config.model` for the stored image shape, from scratch; the
        record names the image shape and the pixel columns a scoring input holds."""
        if config.transfer or config.model in TEXT_MODELS:  # a backbone, or --backbone (the only way a parent comes)
            raise unfit_model(config, meta)
        image = meta["image"]
        network = build_model(config.model, image["channels"], image["height"], image["width"], len(meta["labels"]))
        return network, {"architecture": config.model, "image": image, "pixel_columns": pixel_columns(meta)}

    # -- batch and augment
    def batches(self, version: DatasetVersion, indices: np.ndarray, config: TrainConfig, device: torch.device,
                train: bool, record: dict | None = None) -> TensorBatches:
        """Rows `indices`, held on `device`: when `train`, shuffled batches of `config.batch_size`
        augmented on the device by the loop's generator; else in order, 1024 at a time."""
        return self.tensor_batches(load_split(version, indices, device), config, device, train)

    def tensor_batches(self, split: TensorSplit, config: TrainConfig, device: torch.device, train: bool) -> TensorBatches:
        """`batches` of images already loaded (benchmarks train on splits of their own)."""
        if not train:
            return TensorBatches(split.images, split.targets, 1024, device, lambda x, _: to_float(x))

        def augmented(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return self.augment(images, config, generator).contiguous(memory_format=torch.channels_last)

        return TensorBatches(split.images, split.targets, config.batch_size, device, augmented, shuffle=True, drop_last=True)

    def augment(self, images: torch.Tensor, config: TrainConfig, generator: torch.Generator | None) -> torch.Tensor:
        """uint8 images N x C x H x W as float, augmented in one batch (keel.data.augment)."""
        return augment_batch(to_float(images), config.augment, generator)

    # -- evaluate
    def examples(self, version: DatasetVersion, indices: np.ndarray) -> pd.DataFrame:
        """Stored rows `indices` as pixel rows under the dataset's own pixel column names."""
        pixels = np.asarray(version.images()[np.asarray(indices)]).reshape(len(indices), -1)
        return pd.DataFrame(pixels.astype(np.int64), columns=pixel_columns(version.meta))

    def model_inputs(self, version: DatasetVersion, indices: np.ndarray, model_config: dict) -> torch.Tensor:
        """Stored rows `indices` (sorted) as uint8 images N x C x H x W on the CPU."""
        return load_split(version, indices, torch.device("cpu")).images

    def worst_classified(self, version: DatasetVersion, indices: np.ndarray, probabilities: np.ndarray,
                         class_names: list[str], path: Path) -> list[Path]:
        """A PNG grid of the worst-classified images (keel.modalities.worst)."""
        return image_grid(version, indices, probabilities, class_names, path)

    # -- preprocess for serving
    def preprocess(self, rows: pa.Table | pd.DataFrame, model_config: dict) -> Prepared:
        """Pixel rows (the model's `pixel_columns`, 0-255) as uint8 images. A row with an empty,
        non-numeric, fractional or out-of-range pixel is refused with one problem per reason
        (its first such column named, and how many pixels); all are refused when columns lack."""
        columns, image = model_config["pixel_columns"], model_config["image"]
        present = set(rows.column_names if isinstance(rows, pa.Table) else rows.columns)
        missing = [c for c in columns if c not in present]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            return refused(len(rows), missing[0], f"missing column(s) {shown}", image)
        table = rows if isinstance(rows, pa.Table) else _pixel_table(rows, columns)
        matrix, non_numeric = pixel_matrix(table, columns)
        good, problems = _pixel_problems(matrix, non_numeric, columns)
        pixels = (matrix if good.all() else matrix[good]).astype(np.uint8)
        pixels = pixels.reshape(-1, image["height"], image["width"], image["channels"])
        return prepared(pixels, good, problems)


def pixel_columns(meta: dict) -> list[str]:
    """A pixel table's pixel columns: the dataset's own names (its pixel_prefix), not pixel1.."""
    return [c for c in meta.get("header", []) if c not in (meta.get("label_column"), meta.get("group_column"))]


def _pixel_table(frame: pd.DataFrame, columns: list[str]) -> pa.Table:
    """A DataFrame's pixel columns as an Arrow table; a column of text or mixed values as text,
    which `pixel_matrix` parses (and reports) as a CSV's would be."""
    def array(values: pd.Series) -> pa.Array:
        if pd.api.types.is_numeric_dtype(values):
            return pa.Array.from_pandas(values)
        return pa.array([None if pd.isna(v) else str(v) for v in values], pa.string())

    return pa.table({c: array(frame[c]) for c in columns})


# How scoring names each way a pixel breaks keel.data.pixel_rule (in its errors file's `reason`).
SCORING_REASONS = {"pixel_nulls": "empty pixel", "pixel_non_numeric": "not a number",
                   "pixel_non_integer": "not a whole number", "range": f"out of range (pixels are {PIXEL_MIN}-{PIXEL_MAX})"}


def _pixel_problems(matrix: np.ndarray, non_numeric: np.ndarray | None,
                    columns: list[str]) -> tuple[np.ndarray, list[tuple]]:
    """(good-row mask, problems: position, first offending column, its value, reason) of a pixel
    matrix as `pixel_matrix` reads it: a row has one problem per way its pixels break the rule."""
    bad = np.flatnonzero(invalid_pixels(matrix, non_numeric).any(axis=1))
    good = np.ones(len(matrix), dtype=bool)
    good[bad] = False
    if not len(bad):
        return good, []
    masks = pixel_problems(matrix[bad], None if non_numeric is None else non_numeric[bad])
    masks["range"] = masks.pop("pixel_min") | masks.pop("pixel_max")
    problems = []
    for check, mask in masks.items():
        rows = np.flatnonzero(mask.any(axis=1))
        for row, col, count in zip(rows, mask[rows].argmax(axis=1), mask[rows].sum(axis=1)):
            value = "" if check in ("pixel_nulls", "pixel_non_numeric") else f"{matrix[bad[row], col]:g}"
            problems.append((int(bad[row]), columns[col], value,
                             SCORING_REASONS[check] + (f" ({count} pixels)" if count > 1 else "")))
    return good, problems


def _schema_expectations(config: DatasetConfig) -> list[dict]:
    n = config.image.n_pixels
    first, last = config.pixel_columns[0], config.pixel_columns[-1]
    return [
        expectation("expect_column_values_to_be_in_set",
                    f"only {config.label_column}, an id column{', ' + config.group_column if config.group_column else ''} "
                    f"and {first}..{last} may appear",
                    "reject", column="role", value_set=["label", "id", "pixel", *(["group"] if config.group_column else [])]),
        expectation("expect_column_distinct_values_to_contain_set", f"all {n} pixel columns {first}..{last} must be present",
                    "reject", column="column", value_set=config.pixel_columns),
        expectation("expect_column_distinct_values_to_contain_set", f"training data needs the label column {config.label_column}",
                    "reject", needs="training", column="column", value_set=[config.label_column]),
        expectation("expect_column_values_to_be_unique", "column names must be unique", "reject", column="column"),
        expectation("expect_column_values_to_be_in_set", "pixel columns must read as integers (a text or fractional value spoils the column)",
                    "report", column="pixel_kind", value_set=["integer"]),
    ]


def _row_expectations(config: DatasetConfig) -> list[dict]:
    labels = [str(v) for v in config.labels]
    policy = config.validation
    counted = [expectation("expect_column_values_to_be_in_set", PIXEL_CHECKS[column], "quarantine", column=column, value_set=[0])
               for column in ("pixel_nulls", "pixel_non_numeric", "pixel_non_integer")]
    return [
        expectation("expect_table_row_count_to_be_between", f"the batch must hold {policy.min_rows}-{policy.max_rows} rows",
                    "reject", min_value=policy.min_rows, max_value=policy.max_rows),
        expectation("expect_column_values_to_not_be_null", "every row needs a label", "quarantine", needs="labels", column="label"),
        expectation("expect_column_values_to_be_in_set", f"labels must be one of the configured classes ({', '.join(labels)})",
                    "quarantine", needs="labels", column="label", value_set=labels),
        *counted,
        expectation("expect_column_values_to_be_between", PIXEL_CHECKS["pixel_min"], "quarantine", column="pixel_min",
                    min_value=PIXEL_MIN),
        expectation("expect_column_values_to_be_between", PIXEL_CHECKS["pixel_max"], "quarantine", column="pixel_max",
                    max_value=PIXEL_MAX),
        expectation("expect_column_values_to_be_unique", "ids must be unique within the batch", "quarantine", needs="ids", column="id"),
    ]


PIXEL_TABLE = PixelTable()
