"""Prefect tasks: open (or resume) the MLflow run, then train."""

from prefect import get_run_logger, task

from keel.core.config import TrainConfig
from keel.stages.pipeline import prepare_tracking_stage, start_run_stage, train_stage
from tasks import REMOTE, RESUMABLE, redacted_errors


@task(name="prepare-tracking", **REMOTE)
@redacted_errors
def prepare_tracking(dataset_config: str) -> str:
    """The MLflow experiment id; opens (on first use, creates) the tracking store."""
    return prepare_tracking_stage(dataset_config)


@task(name="start-run", **REMOTE)
@redacted_errors
def start_run(dataset_config: str, version: dict, train: TrainConfig, fresh: bool = False) -> dict:
    """The MLflow run id and checkpoint folder; an interrupted identical run is resumed, a
    running one waited for (and said so in the log)."""
    return start_run_stage(dataset_config, version["version_dir"], train, fresh, on_wait=get_run_logger().warning)


@task(name="train", **RESUMABLE)
@redacted_errors
def train_model(run: dict, version: dict, train: TrainConfig) -> dict:
    """Path of the trained model and the training summary. A retry resumes from the last epoch's checkpoint."""
    return train_stage(run["run_id"], version["version_dir"], train, run["checkpoint_dir"])
