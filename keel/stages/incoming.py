"""Stages for incoming data: the landed files to check, validating one, curating an accepted one.

No MLflow and no training here: `keel validate` starts without them (keel.stages.profiling
infers the suite and its anomaly scorer)."""

from __future__ import annotations

from pathlib import Path

from keel.core.config import load_dataset_config
from keel.data.landing import pending_files
from keel.validation.incoming import BatchResult, curate_batch, validate_batch
from keel.validation.suite import suite_path


def default_suite_path(dataset_config: str) -> Path:
    """Where the config's suite lives: its `expectations:` path, else conf/expectations/<name>.json."""
    config = load_dataset_config(dataset_config)
    return suite_path(config) or Path(dataset_config).resolve().parent.parent / "expectations" / f"{config.name}.json"


def validate_incoming_stage(dataset_config: str, input_path: str, report_dir: str | None = None,
                            labels_path: str | None = None, id_column: str = "id") -> BatchResult:
    """Validates one landed file with the dataset's suite."""
    return validate_batch(load_dataset_config(dataset_config), input_path, report_dir, labels_path, id_column)


def pending_stage(dataset_config: str, input_path: str) -> list[str]:
    """The landed files to validate: the file itself, or a folder's files without a report."""
    return pending_files(load_dataset_config(dataset_config), input_path)


def curate_stage(dataset_config: str, report_dir: str) -> dict:
    """Adds an accepted batch to the curated training data; returns the new dataset version."""
    return curate_batch(load_dataset_config(dataset_config), report_dir)
