"""The profiling stage: infer a dataset's expectation suite from its reference version and
register the anomaly scorer (an autoencoder) that goes with it; a text dataset's suite keeps
its drift reference (encoder embeddings, word frequencies) in a file beside it instead, and
registers nothing (keel.validation.text_profiling)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param

from keel.core.config import DatasetConfig, load_dataset_config
from keel.core.contracts import VersionRef
from keel.data.versions import DatasetVersion
from keel.modalities import modality_for
from keel.modalities.text import TEXT
from keel.stages.incoming import default_suite_path
from keel.stages.ingest import stored
from keel.stages.runs import log_dataset_input
from keel.tracking import client as tracking
from keel.serving.pyfunc import ANOMALY_SCORER, log_pyfunc
from keel.tracking.registry import register
from keel.validation.profiling import profile_reference
from keel.validation.suite import write_suite
from keel.validation.text_profiling import profile_text_reference


def profile_stage(dataset_config: str, version: VersionRef, out: str | None = None, epochs: int = 5) -> dict:
    """Infers the suite from the version, writes it (and the autoencoder), and registers the
    autoencoder in MLflow as `keel-<dataset>-autoencoder`, tagged with the suite's sha256."""
    config = load_dataset_config(dataset_config)
    dataset = stored(version)
    target = Path(out) if out else default_suite_path(dataset_config)
    if modality_for(config) is TEXT:
        return _text_profile(config, dataset, target)
    profiled = profile_reference(config, dataset, target, epochs=epochs)
    doc = profiled["suite"]
    client = tracking.client()
    run_id = _profile_run(client, config, dataset, profiled, epochs)
    rows = np.sort(dataset.indices("evaluation")[:2])
    example = pd.DataFrame(np.asarray(dataset.images()[rows]).reshape(len(rows), -1).astype(np.int64), columns=config.pixel_columns)
    model_uri = log_pyfunc(run_id, ANOMALY_SCORER, Path(profiled["weights_path"]),
                           {"threshold": profiled["threshold"], "pixel_columns": config.pixel_columns}, example)
    name = f"keel-{config.name}-autoencoder"
    number = register(client, model_uri, name, run_id, {
        "dataset": config.name, "dataset_version": dataset.id, "threshold": f"{profiled['threshold']:.6g}",
        "weights_sha256": doc["anomaly"]["sha256"]}, description=f"anomaly scorer of the {config.name} suite",
        model_description="Keel anomaly scorer (autoencoder) kept with an expectation suite")
    doc["anomaly"]["model_uri"] = f"models:/{name}/{number}"
    write_suite(doc, target)
    client.log_artifact(run_id, str(target), artifact_path="suite")
    client.set_model_version_tag(name, number, "suite_sha256", hashlib.sha256(target.read_bytes()).hexdigest())
    client.set_terminated(run_id, "FINISHED")
    return {"suite_path": str(target), "weights_path": profiled["weights_path"], "model_uri": doc["anomaly"]["model_uri"],
            "run_id": run_id, "threshold": profiled["threshold"], "behaviour": profiled["behaviour"],
            "expectations": sum(len(v) for v in doc["suites"].values()), "seconds": profiled["seconds"]}


def _text_profile(config: DatasetConfig, version: DatasetVersion, target: Path) -> dict:
    """The text suite and its drift reference; `lines` say what was learned (the CLI prints them)."""
    profiled = profile_text_reference(config, version, target)
    doc, held_out = profiled["suite"], profiled["held_out"]
    lines = [f"reference   {profiled['reference_path']} ({doc['text_reference']['embedded_rows']} training texts embedded "
             f"by {doc['text_reference']['encoder']})",
             f"tokens      {profiled['token_bounds'][0]}-{profiled['token_bounds'][1]} per text; out-of-vocabulary rate "
             f"{doc['drift']['oov']['reference_rate']:.2%} on unseen texts"]
    if held_out:
        lines.append(f"held out    {held_out['rows']} evaluation texts against the reference: classifier AUC "
                     f"{held_out['auc']:.3f} (drift from {doc['drift']['embedding']['auc_max']:g})")
    return {"suite_path": str(target), "reference_path": profiled["reference_path"], "lines": lines,
            "expectations": sum(len(v) for v in doc["suites"].values()), "seconds": profiled["seconds"]}


def _profile_run(client, config: DatasetConfig, version: DatasetVersion, profiled: dict, epochs: int) -> str:
    """A run in `keel-<dataset>-profiles` with the autoencoder's training history and the
    suite's figures; returns its id."""
    doc, trained = profiled["suite"], profiled["trained"]
    experiment = tracking.experiment_id(client, f"keel-{config.name}-profiles")
    run = client.create_run(experiment, run_name=f"{config.name} profile {config.name}@{version.id[:8]}", tags={
        "keel.dataset": config.name, "keel.dataset_version": version.id, "keel.git_commit": tracking.git_commit(),
        "mlflow.source.name": "keel validate profile"})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    params = {"epochs": epochs, "percentile": doc["anomaly"]["percentile"], "margin": doc["anomaly"]["margin"],
              **{f"autoencoder.{k}": v for k, v in doc["anomaly"]["architecture"].items()}}
    metrics = [Metric(k, float(v), now, row["epoch"]) for row in trained.history for k, v in row.items() if k != "epoch"]
    metrics += [Metric(k, float(v), now, 0) for k, v in profiled["behaviour"].items()]
    metrics += [Metric("anomaly_threshold", profiled["threshold"], now, 0), Metric("train_seconds", trained.seconds, now, 0)]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    log_dataset_input(client, run_id, version)
    return run_id
