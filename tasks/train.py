"""Prefect tasks: open (or resume) the MLflow run, then train."""

from prefect import task

from keel.config import TrainConfig
from keel.pipeline import prepare_tracking_stage, start_run_stage, train_stage
from tasks import retry_unless_user_error


@task(name="prepare-tracking", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error)
def prepare_tracking(dataset_config: str) -> str:
    """The MLflow experiment id; opens (on first use, creates) the tracking store."""
    return prepare_tracking_stage(dataset_config)


@task(name="start-run", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error)
def start_run(dataset_config: str, version: dict, train: TrainConfig, fresh: bool = False) -> dict:
    """The MLflow run id and checkpoint folder; an interrupted identical run is resumed."""
    return start_run_stage(dataset_config, version["version_dir"], train, fresh)


@task(name="train", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error)
def train_model(run: dict, version: dict, train: TrainConfig) -> dict:
    """Path of the trained model and the training summary. A retry resumes from the last epoch's checkpoint."""
    return train_stage(run["run_id"], version["version_dir"], train, run["checkpoint_dir"])
