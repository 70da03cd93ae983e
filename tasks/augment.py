"""Prefect task: preview the batched augmentation that training applies on the device."""

from prefect import task

from keel.core.config import AugmentConfig
from keel.stages.pipeline import augmentation_preview_stage
from tasks import REMOTE, redacted_errors


@task(name="augmentation-preview", **REMOTE)
@redacted_errors
def preview_augmentation(run: dict, version: dict, augment: AugmentConfig, seed: int = 0) -> str:
    """Path of a PNG grid of originals and their augmented copies, logged to the MLflow run."""
    return augmentation_preview_stage(run["run_id"], version["version_dir"], augment, seed)
