"""The training flow: ingest -> validate -> (run) -> augmentation preview -> train -> evaluate
-> register (as challenger) -> promote (the champion/challenger gate).

Run it as `keel train` (cli/), or through the `weekly-retraining` deployment (prefect.yaml).
"""

from __future__ import annotations

from prefect import flow

from keel.core.config import TrainConfig
from keel.core.contracts import TrainingOutcome
from keel.stages.runs import kill_run
from keel.tracking.promotion import PromotionPolicy
from tasks import is_termination
from tasks.augment import preview_augmentation
from tasks.evaluate import evaluate_model
from tasks.ingest import ingest_dataset
from tasks.promote import promote_model
from tasks.register import register_model
from tasks.train import prepare_tracking, start_run, train_model
from tasks.validate import validate_dataset

DEFAULT_DATASET_CONFIG = "conf/datasets/sign-mnist.yaml"


@flow(name="keel-training", log_prints=True)
def training_flow(
    dataset_config: str = DEFAULT_DATASET_CONFIG,
    train: TrainConfig = TrainConfig(),
    fresh: bool = False,
    model_name: str | None = None,
    promotion: PromotionPolicy = PromotionPolicy(),
    nproc: int = 1,
) -> TrainingOutcome:
    """Trains, evaluates and registers a model on the dataset the YAML config describes.

    Args:
        dataset_config: The dataset's YAML file (relative to the project folder, or absolute).
        train: Architecture, epochs, batch size, learning rate, device, precision, augmentation.
        fresh: Ignore the checkpoint of an interrupted identical run and start over.
        model_name: Registered model name (default keel-<dataset>).
        promotion: The champion/challenger gate: accuracy floor, paired-test confidence and minimum improvement, largest recall drop.
        nproc: Processes of data-parallel training (pixel tables): gloo on the CPU, one GPU each with NCCL.
    """
    # Opening the tracking store (a first run creates its tables) overlaps ingest and validation.
    tracking_ready = prepare_tracking.submit(dataset_config)
    version = ingest_dataset(dataset_config)
    validation = validate_dataset(dataset_config, version)
    run = start_run(dataset_config, version, train, fresh, wait_for=[tracking_ready])
    try:
        preview_augmentation(run, version, train.augment, train.seed)
        trained = train_model(run, version, train, nproc)
        metrics = evaluate_model(run, version, trained)
        registered = register_model(run, version, trained, metrics, model_name)  # ends the run FINISHED
    except BaseException as exc:
        if is_termination(exc):  # SIGTERM or Ctrl-C: not a task, the process is stopping
            kill_run(run)
        raise
    verdict = promote_model(version, registered, metrics, promotion)
    return TrainingOutcome(version=version, validation=validation, run=run, trained=trained, metrics=metrics,
                           registered=registered, verdict=verdict)
