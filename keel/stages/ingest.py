"""Ingest and validation stages: store (or reuse) a dataset version, check it, describe its split."""

from __future__ import annotations

import time
from pathlib import Path

from keel.core import settings
from keel.core.config import load_dataset_config
from keel.core.contracts import IngestedVersion, VersionRef
from keel.core.errors import DataValidationError
from keel.data.versions import DatasetVersion
from keel.modalities import ingest
from keel.validation.checks import ValidationReport, validate_version


def ingest_stage(dataset_config: str) -> IngestedVersion:
    """Stores (or reuses) the dataset version of the config's files."""
    config = load_dataset_config(dataset_config)
    started = time.perf_counter()
    result = ingest(config)
    meta = result.version.meta
    return IngestedVersion(
        dataset=config.name, version=meta["version"], version_dir=str(result.version.path),
        rows=meta["rows"], reused=result.reused, seconds=time.perf_counter() - started,
        evaluation_ids_sha256=meta.get("evaluation_ids_sha256"),
        split=result.version.split_description, leakage=result.version.leakage.get("evaluation", {}))


def stored(version: VersionRef) -> DatasetVersion:
    """The stored version a reference names."""
    return DatasetVersion(version.path)


def split_tags(version: DatasetVersion) -> dict[str, str]:
    """Where a version's evaluation figures come from, as MLflow tags: the split's kind,
    method, threshold and groups, and how much of it leaks into training."""
    split = version.meta.get("evaluation_split", {})
    grouping = split.get("grouping", {})
    leak = version.leakage.get("evaluation")
    tags = {
        "keel.split": version.split_description,
        "keel.split.kind": split.get("name", "random"),
        "keel.split.method": grouping.get("method", ""),
        "keel.split.threshold": str(split.get("threshold", "")),
        "keel.split.groups": str(grouping.get("groups", "")),
        "keel.split.evaluation_rows": str(version.meta.get("evaluation_rows", "")),
    }
    if leak:
        tags["keel.leakage.near_copy_share"] = f"{leak['near_copy_share']:.4f}"
        tags["keel.leakage.nn_accuracy"] = f"{leak['nn_accuracy']:.4f}"
    return tags


def validation_docs_dir(dataset: str, version: str) -> Path:
    return settings.reports_dir() / "validation" / dataset / version


def validate_stage(dataset_config: str, version: VersionRef) -> ValidationReport:
    """Runs the expectation suite; raises DataValidationError (carrying the report) on failure."""
    config = load_dataset_config(dataset_config)
    dataset = stored(version)
    report = validate_version(dataset, config, validation_docs_dir(config.name, dataset.id))
    if not report.success:
        raise DataValidationError(f"data validation failed, training stopped:\n{report.summary()}", report)
    return report
