"""Prefect task: preview the batched augmentation that training applies on the device."""

from prefect import task

from keel.config import AugmentConfig
from keel.pipeline import augmentation_preview_stage
from tasks import retry_unless_user_error


@task(name="augmentation-preview", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error)
def preview_augmentation(run: dict, version: dict, augment: AugmentConfig, seed: int = 0) -> str:
    """Path of a PNG grid of originals and their augmented copies, logged to the MLflow run."""
    return augmentation_preview_stage(run["run_id"], version["version_dir"], augment, seed)
