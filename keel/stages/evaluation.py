"""The evaluation stage: score the saved model exactly as it will be served, on the evaluation
split (and test files), and log the figures (the modality's view of the worst-classified rows:
images or texts); and scoring a registered version on a split."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.entities import Metric
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from keel.core import settings
from keel.core.contracts import RunRef, TrainingSummary, VersionRef
from keel.core.plots import confusion_matrix_png
from keel.data.versions import DatasetVersion, class_indices
from keel.modalities import modality_for
from keel.stages.ingest import stored
from keel.serving.pyfunc import load_verified_model
from keel.stages.training import load_trained, scoring_config
from keel.tracking import client as tracking
from keel.training.evaluate import classification_metrics
from keel.models.device import predict_logits, select_device, select_precision


def evaluate_stage(run: RunRef, version: VersionRef, trained: TrainingSummary) -> dict[str, dict]:
    """Scores the evaluation split (and test files, if any); logs metrics, confusion matrices
    and the worst-classified rows. Returns classification_metrics per part, with the paths of
    its figures and predictions (texts: also the worst-classified table as markdown)."""
    dataset = stored(version)
    model, spec = load_trained(trained.model_path, for_inference=True)  # scored exactly as it will be served
    config = scoring_config(trained.model_path, spec)
    modality = modality_for(dataset)
    device = select_device("auto")
    precision = select_precision(spec.inference_precision, device)
    model = model.to(device)
    client = tracking.client()
    out = {}
    for part in ("evaluation", "test"):
        indices = dataset.indices(part)
        if not len(indices):
            continue
        inputs = modality.model_inputs(dataset, indices, config)
        probabilities = torch.softmax(predict_logits(model, inputs, device, precision), dim=1).cpu().numpy()
        out[part] = _log_part(client, run.run_id, part, dataset, indices, probabilities, spec.class_names)
    return out


def _log_part(client, run_id: str, part: str, dataset: DatasetVersion, indices: np.ndarray, probabilities: np.ndarray,
              class_names: list[str]) -> dict:
    """One part's metrics, confusion matrix, worst-classified rows and per-row predictions, logged to the run."""
    predictions = probabilities.argmax(1)
    metrics = classification_metrics(_targets(dataset, indices), predictions, class_names)
    now = int(time.time() * 1000)
    # Per-class figures go into a table, not 2 x classes metrics that would bury the run's curves.
    client.log_batch(run_id, metrics=[Metric(f"{part}_accuracy", metrics["accuracy"], now, 0),
                                      Metric(f"{part}_macro_f1", metrics["macro_f1"], now, 0)])
    folder = settings.reports_dir() / "runs" / run_id
    _log_table(client, run_id, pd.DataFrame(metrics["per_class"]), folder / f"{part}_per_class.json")
    png = confusion_matrix_png(np.array(metrics["confusion_matrix"]), class_names,
                               folder / f"{part}_confusion_matrix.png", title=f"{part} split: confusion matrix")
    client.log_artifact(run_id, str(png), artifact_path="evaluation")
    figures = {"confusion_matrix_png": str(png)}
    # Images: a PNG grid; texts: a markdown and a CSV table (keel.modalities.worst).
    for path in modality_for(dataset).worst_classified(dataset, indices, probabilities, class_names,
                                                       folder / f"{part}_worst_classified"):
        client.log_artifact(run_id, str(path), artifact_path="evaluation")
        figures[f"worst_classified_{path.suffix.lstrip('.')}"] = str(path)
        if path.suffix == ".md":  # published as it is (a Prefect markdown artifact)
            figures["worst_classified_markdown"] = path.read_text()
    # Per-row predicted class indices (rows in sorted-index order): the gate's paired test needs them.
    folder.mkdir(parents=True, exist_ok=True)
    predictions_npy = folder / f"{part}_predictions.npy"
    np.save(predictions_npy, predictions.astype(np.int32))
    client.log_artifact(run_id, str(predictions_npy), artifact_path="evaluation")
    client.log_dict(run_id, metrics, f"evaluation/{part}_metrics.json")
    return metrics | figures | {"predictions_path": str(predictions_npy)}


def _log_table(client, run_id: str, table: pd.DataFrame, path: Path) -> None:
    """`table` as a table artifact of the run (evaluation/<file>.json), written as
    MlflowClient.log_table writes one, so MLflow's table views and load_table read it. log_table
    itself appends to a table the run has already: a retried evaluation would list every class
    twice. This replaces the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_json(path, orient="split", index=False)
    client.log_artifact(run_id, str(path), artifact_path="evaluation")
    logged = json.loads(client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": f"evaluation/{path.name}", "type": "table"}
    if entry not in logged:
        client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps(logged + [entry]))


def _targets(dataset: DatasetVersion, indices: np.ndarray) -> np.ndarray:
    """The class indices of rows `indices`, in sorted row order (the order models score them in)."""
    return class_indices(dataset.labels()[np.sort(indices)], dataset.meta["labels"])


def score_registered_on_split(model_uri: str, version: VersionRef, part: str = "evaluation") -> dict:
    """classification_metrics of a registered model on a split of a dataset version, plus
    `predictions`: the per-row predicted class indices (a list, rows in sorted-index order)."""
    dataset = stored(version)
    classifier = load_verified_model(model_uri)
    if classifier.config["class_names"] != dataset.meta["class_names"]:
        raise ValueError(f"{model_uri} predicts classes {classifier.config['class_names']}, "
                         f"not the dataset's {dataset.meta['class_names']}")
    indices = dataset.indices(part)
    inputs = modality_for(dataset).model_inputs(dataset, indices, classifier.config)
    logits = predict_logits(classifier.model, inputs, classifier.device, classifier.precision)
    predictions = logits.argmax(1).cpu().numpy()
    metrics = classification_metrics(_targets(dataset, indices), predictions, dataset.meta["class_names"])
    return metrics | {"predictions": predictions.tolist()}
