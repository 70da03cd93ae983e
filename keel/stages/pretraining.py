"""The pre-training stages (`keel pretrain`): open or resume the run, pre-train bert-tiny as a
masked language model on the training rows (keel.training.pretrain), save it with its
tokenizer, and score masked-token accuracy on the evaluation rows. Registration is in
keel.stages.pretrained_registration.

A pre-training's run key is its own checkpoint folder (`mlm-<hash of its config and the
dataset version>`): as for `keel train`, one process at a time holds it, and an interrupted
identical pre-training resumes its run from the last epoch's checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from keel.core import settings
from keel.core.config import load_dataset_config
from keel.core.contracts import Contract, IngestedVersion, RegisteredVersion, RunRef, TrainingSummary, VersionRef
from keel.core.pretrain_config import PretrainConfig
from keel.data.versions import DatasetVersion
from keel.models.device import select_device, select_precision, set_threads
from keel.models.masked_lm import MaskedLanguageModel, build_masked_lm
from keel.stages.ingest import split_tags, stored
from keel.stages.runs import experiment_name, hold_run_lock, log_dataset_input
from keel.stages.training import epoch_logger, log_training, saved_model, with_tokenizer
from keel.tracking import client as tracking
from keel.training.checkpoint import config_key
from keel.training.pretrain import masked_batches, masked_token_metrics, pretrain, require_texts


class PretrainingOutcome(Contract):
    """What `keel pretrain` (flows/pretraining.py) returns."""

    version: IngestedVersion
    validation: dict
    run: RunRef
    trained: TrainingSummary
    metrics: dict  # {"evaluation": masked_token_metrics of the evaluation rows}
    registered: RegisteredVersion
    alias: str


def pretrain_dir(dataset: str, version: str, config: PretrainConfig) -> Path:
    """The run key of a pre-training: its checkpoint folder."""
    return settings.checkpoints_dir() / dataset / f"mlm-{config_key(config, version)}"


def pretrain_run_stage(dataset_config: str, version: VersionRef, config: PretrainConfig, fresh: bool = False,
                       on_wait: Callable[[str], None] | None = None) -> RunRef:
    """The MLflow run of this pre-training: the unfinished one of an interrupted identical
    pre-training (resumed), else a new one with the config as parameters."""
    name = load_dataset_config(dataset_config).name
    dataset = stored(version)
    require_texts(dataset)
    folder = pretrain_dir(name, dataset.id, config)
    hold_run_lock(folder, on_wait)
    if fresh and folder.exists():
        shutil.rmtree(folder)
    client = tracking.client()
    experiment = tracking.experiment_id(client, experiment_name(name))
    marker = folder / "run.json"
    if marker.exists():
        run_id = json.loads(marker.read_text())["run_id"]
        status = _run_status(client, run_id)
        if status not in (None, "FINISHED"):
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "keel.resumed", "true")
            return RunRef(run_id=run_id, experiment_id=experiment, checkpoint_dir=str(folder), resumed=True)
        shutil.rmtree(folder)  # a finished run's leftovers: start over
    run = client.create_run(experiment, run_name=f"{name}-mlm-{config.model} {name}@{dataset.id[:8]} seed {config.seed}", tags={
        "keel.dataset": name, "keel.dataset_version": dataset.id, "keel.task": "fill-mask",
        "keel.git_commit": tracking.git_commit(), "mlflow.source.name": "keel pretrain"})
    params = {"dataset": name, "dataset_version": dataset.id, **config.model_dump()}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in split_tags(dataset).items()])
    log_dataset_input(client, run.info.run_id, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": run.info.run_id}))
    return RunRef(run_id=run.info.run_id, experiment_id=experiment, checkpoint_dir=str(folder), resumed=False)


def _run_status(client, run_id: str) -> str | None:
    """The run's status, or None when the store does not know it (an outage propagates: the
    checkpoint must not be thrown away because the tracking server is down)."""
    try:
        return client.get_run(run_id).info.status
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def pretrain_stage(run: RunRef, version: VersionRef, config: PretrainConfig,
                   progress: bool | None = None) -> TrainingSummary:
    """Pre-trains (resuming from the run's checkpoint), logs each epoch, the learning curves and
    the best weights; saves the model (model.pt: weights and JSON-able config) beside its
    tokenizer; returns where it is and how training went."""
    set_threads()
    client = tracking.client()
    dataset = stored(version)
    folder = Path(run.checkpoint_dir)
    log_epoch = epoch_logger(client, run.run_id)
    result = pretrain(dataset, config, select_device(config.device), folder / "last.pt", on_epoch_end=log_epoch,
                      progress=progress)
    planned_epochs = log_training(client, run.run_id, result, log_epoch)
    # The vocabulary travels with the weights.
    spec = {**with_tokenizer(result.record, folder), "inference_precision": "auto", "dataset": dataset.name,
            "dataset_version": dataset.id}
    return saved_model(folder / "model.pt", result, spec, planned_epochs)


def load_pretrained(model_path: str) -> tuple[MaskedLanguageModel, dict]:
    """The masked language model pretrain_stage saved, and its config (with `tokenizer_file`:
    the absolute path of its tokenizer, set here and never logged). Loaded with
    `weights_only=True`: the file holds tensors and JSON values only."""
    saved = torch.load(model_path, map_location="cpu", weights_only=True)
    config = dict(saved["model_config"])
    model = build_masked_lm(config["build"])
    model.load_state_dict(saved["state_dict"])
    config["tokenizer_file"] = str(Path(model_path).parent / config["tokenizer"])
    return model.eval(), config


def evaluate_pretrained_stage(run: RunRef, version: VersionRef, trained: TrainingSummary,
                              config: PretrainConfig) -> dict:
    """Masked-token accuracy (and top-k accuracy, loss, perplexity) of the pre-trained model on
    the evaluation rows, each masked once with the run's seed; logged to the run as
    `evaluation_masked_*`."""
    dataset = stored(version)
    model, model_config = load_pretrained(trained.model_path)
    device = select_device(config.device)
    metrics = evaluation_metrics(model.to(device), dataset, model_config["tokenizer_file"], config, device)
    now = int(time.time() * 1000)
    tracking.client().log_batch(run.run_id, metrics=[
        Metric(f"evaluation_{k}", float(v), now, 0) for k, v in metrics.items() if k != "rows"])
    return {"evaluation": metrics}


def evaluation_metrics(model: MaskedLanguageModel, dataset: DatasetVersion, tokenizer_file: str,
                       config: PretrainConfig, device: torch.device) -> dict:
    """masked_token_metrics on the version's evaluation rows, and how many rows they are."""
    rows = dataset.indices("evaluation")
    source = masked_batches(dataset, rows, tokenizer_file, config, device, train=False)
    precision = select_precision(config.precision, device)
    return {**masked_token_metrics(model, source, device, precision, config.top_k), "rows": int(len(rows))}
