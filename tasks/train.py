"""Prefect tasks: open (or resume) the MLflow run, then train."""

from prefect import get_run_logger

from keel.core.config import TrainConfig
from keel.core.contracts import RunRef, TrainingSummary, VersionRef
from keel.stages.runs import prepare_tracking_stage, start_run_stage
from keel.stages.training import train_stage
from tasks import REMOTE, RESUMABLE, keel_task
from tasks.links import link_runs


@keel_task("prepare-tracking", REMOTE)
def prepare_tracking(dataset_config: str) -> str:
    """The MLflow experiment id; opens (on first use, creates) the tracking store."""
    return prepare_tracking_stage(dataset_config)


@keel_task("start-run", REMOTE)
def start_run(dataset_config: str, version: VersionRef, train: TrainConfig, fresh: bool = False) -> RunRef:
    """The MLflow run id and checkpoint folder; an interrupted identical run is resumed, a
    running one waited for (and said so in the log)."""
    run = start_run_stage(dataset_config, version, train, fresh, on_wait=get_run_logger().warning)
    link_runs(run.experiment_id, run.run_id)
    return run


@keel_task("train", RESUMABLE)
def train_model(run: RunRef, version: VersionRef, train: TrainConfig, nproc: int = 1) -> TrainingSummary:
    """Path of the trained model and the training summary. A retry resumes from the last epoch's checkpoint.
    `nproc` > 1: data-parallel training in that many processes."""
    return train_stage(run, version, train, nproc=nproc)
