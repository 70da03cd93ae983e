"""Prefect task: preview the batched augmentation that training applies on the device."""

from keel.core.config import AugmentConfig
from keel.core.contracts import RunRef, VersionRef
from keel.stages.training import augmentation_preview_stage
from tasks import REMOTE, keel_task


@keel_task("augmentation-preview", REMOTE)
def preview_augmentation(run: RunRef, version: VersionRef, augment: AugmentConfig, seed: int = 0) -> str:
    """Path of a PNG grid of originals and their augmented copies, logged to the MLflow run
    ("" for texts: they are not augmented)."""
    return augmentation_preview_stage(run, version, augment, seed)
