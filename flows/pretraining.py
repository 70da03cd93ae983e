"""The pre-training flow: ingest -> validate -> (run) -> pre-train bert-tiny as a masked
language model on the training rows -> masked-token accuracy on the evaluation rows ->
register the fill-mask model under an alias (no gate).

Run it as `keel pretrain` (cli/), or through the `text-pretraining` deployment (prefect.yaml).
Its encoder then starts a classifier: `keel train --model bert-tiny --backbone models:/NAME@ALIAS`.
"""

from __future__ import annotations

from prefect import flow

from keel.stages.pretrained_registration import PRETRAINED
from keel.stages.pretraining import PretrainingOutcome
from keel.stages.runs import kill_run
from keel.core.pretrain_config import PretrainConfig
from tasks import is_termination
from tasks.ingest import ingest_dataset
from tasks.pretrain import evaluate_pretrained, pretrain_model, register_pretrained, start_pretraining
from tasks.train import prepare_tracking
from tasks.validate import validate_dataset

DEFAULT_DATASET_CONFIG = "conf/datasets/sms-spam.yaml"


@flow(name="keel-pretraining", log_prints=True)
def pretraining_flow(
    dataset_config: str = DEFAULT_DATASET_CONFIG,
    pretrain: PretrainConfig = PretrainConfig(),
    fresh: bool = False,
    model_name: str | None = None,
    alias: str = PRETRAINED,
) -> PretrainingOutcome:
    """Pre-trains, evaluates and registers a masked language model on a text dataset's training rows.

    Args:
        dataset_config: The text dataset's YAML file (relative to the project folder, or absolute).
        pretrain: Epochs, time budget, batch size, learning rate, mask share, truncation length, device.
        fresh: Ignore the checkpoint of an interrupted identical pre-training and start over.
        model_name: Registered model name (default <dataset>-mlm).
        alias: The alias the new version gets (a classifier names it in --backbone models:/NAME@ALIAS).
    """
    tracking_ready = prepare_tracking.submit(dataset_config)
    version = ingest_dataset(dataset_config)
    validation = validate_dataset(dataset_config, version)
    run = start_pretraining(dataset_config, version, pretrain, fresh, wait_for=[tracking_ready])
    try:
        trained = pretrain_model(run, version, pretrain)
        metrics = evaluate_pretrained(run, version, trained, pretrain)
        registered = register_pretrained(run, version, trained, metrics, model_name, alias)  # ends the run FINISHED
    except BaseException as exc:
        if is_termination(exc):  # SIGTERM or Ctrl-C: not a task, the process is stopping
            kill_run(run)
        raise
    return PretrainingOutcome(version=version, validation=validation, run=run, trained=trained, metrics=metrics,
                              registered=registered, alias=alias)
