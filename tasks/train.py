"""Prefect tasks: open (or resume) the MLflow run, then train."""

from prefect import task

from keel.config import TrainConfig
from keel.pipeline import prepare_tracking_stage, start_run_stage, train_stage
from tasks import REMOTE, RESUMABLE


@task(name="prepare-tracking", **REMOTE)
def prepare_tracking(dataset_config: str) -> str:
    """The MLflow experiment id; opens (on first use, creates) the tracking store."""
    return prepare_tracking_stage(dataset_config)


@task(name="start-run", **REMOTE)
def start_run(dataset_config: str, version: dict, train: TrainConfig, fresh: bool = False) -> dict:
    """The MLflow run id and checkpoint folder; an interrupted identical run is resumed."""
    return start_run_stage(dataset_config, version["version_dir"], train, fresh)


@task(name="train", **RESUMABLE)
def train_model(run: dict, version: dict, train: TrainConfig) -> dict:
    """Path of the trained model and the training summary. A retry resumes from the last epoch's checkpoint."""
    return train_stage(run["run_id"], version["version_dir"], train, run["checkpoint_dir"])
