"""The evaluation stage: score the saved model exactly as it will be served, on the evaluation
split (and test files), and log the figures; and scoring a registered version on a split."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from mlflow.entities import Metric

from keel.core import settings
from keel.core.contracts import RunRef, TrainingSummary, VersionRef
from keel.core.plots import confusion_matrix_png, worst_classified_grid
from keel.stages.ingest import stored
from keel.serving.pyfunc import load_verified_model
from keel.stages.training import load_trained
from keel.tracking import client as tracking
from keel.training.evaluate import classification_metrics
from keel.data.batches import TensorSplit, load_split
from keel.models.device import predict_logits, select_device, select_precision


def evaluate_stage(run: RunRef, version: VersionRef, trained: TrainingSummary) -> dict[str, dict]:
    """Scores the evaluation split (and test files, if any); logs metrics and confusion matrices.
    Returns classification_metrics per part, with the paths of its figures and predictions."""
    dataset = stored(version)
    model, spec = load_trained(trained.model_path, for_inference=True)  # scored exactly as it will be served
    device = select_device("auto")
    precision = select_precision(spec.inference_precision, device)
    model = model.to(device)
    client = tracking.client()
    out = {}
    for part in ("evaluation", "test"):
        indices = dataset.indices(part)
        if not len(indices):
            continue
        split = load_split(dataset, indices, device)
        probabilities = torch.softmax(predict_logits(model, split.images, device, precision), dim=1).cpu().numpy()
        out[part] = _log_part(client, run.run_id, part, split, probabilities, spec.class_names)
    return out


def _log_part(client, run_id: str, part: str, split: TensorSplit, probabilities: np.ndarray,
              class_names: list[str]) -> dict:
    """One part's metrics, confusion matrix, worst-classified grid and per-row predictions, logged to the run."""
    predictions = probabilities.argmax(1)
    metrics = classification_metrics(split.targets.cpu().numpy(), predictions, class_names)
    now = int(time.time() * 1000)
    logged = [Metric(f"{part}_accuracy", metrics["accuracy"], now, 0), Metric(f"{part}_macro_f1", metrics["macro_f1"], now, 0)]
    for row in metrics["per_class"]:
        logged += [Metric(f"{part}_precision_{row['class']}", row["precision"], now, 0),
                   Metric(f"{part}_recall_{row['class']}", row["recall"], now, 0)]
    client.log_batch(run_id, metrics=logged)
    folder = settings.reports_dir() / "runs" / run_id
    png = confusion_matrix_png(np.array(metrics["confusion_matrix"]), class_names,
                               folder / f"{part}_confusion_matrix.png", title=f"{part} split: confusion matrix")
    client.log_artifact(run_id, str(png), artifact_path="evaluation")
    grid = _worst_classified(split, probabilities, class_names, folder / f"{part}_worst_classified.png")
    client.log_artifact(run_id, str(grid), artifact_path="evaluation")
    # Per-row predicted class indices (rows in sorted-index order): the gate's paired test needs them.
    folder.mkdir(parents=True, exist_ok=True)
    predictions_npy = folder / f"{part}_predictions.npy"
    np.save(predictions_npy, predictions.astype(np.int32))
    client.log_artifact(run_id, str(predictions_npy), artifact_path="evaluation")
    client.log_dict(run_id, metrics, f"evaluation/{part}_metrics.json")
    return metrics | {"confusion_matrix_png": str(png), "worst_classified_png": str(grid),
                      "predictions_path": str(predictions_npy)}


def _worst_classified(split: TensorSplit, probabilities: np.ndarray, class_names: list[str], path: Path, n: int = 12) -> Path:
    """A grid of the `n` images whose true class got the lowest probability."""
    targets = split.targets.cpu().numpy()
    worst = np.argsort(probabilities[np.arange(len(targets)), targets])[:n]
    images = split.images[torch.from_numpy(worst)].permute(0, 2, 3, 1).cpu().numpy()
    names = np.asarray(class_names)
    return worst_classified_grid(images, list(names[targets[worst]]), list(names[probabilities[worst].argmax(1)]),
                                 list(probabilities[worst].max(1)), path)


def score_registered_on_split(model_uri: str, version: VersionRef, part: str = "evaluation") -> dict:
    """classification_metrics of a registered model on a split of a dataset version, plus
    `predictions`: the per-row predicted class indices (a list, rows in sorted-index order)."""
    dataset = stored(version)
    classifier = load_verified_model(model_uri)
    if classifier.config["class_names"] != dataset.meta["class_names"]:
        raise ValueError(f"{model_uri} predicts classes {classifier.config['class_names']}, "
                         f"not the dataset's {dataset.meta['class_names']}")
    split = load_split(dataset, dataset.indices(part), classifier.device)
    logits = predict_logits(classifier.model, split.images, classifier.device, classifier.precision)
    predictions = logits.argmax(1).cpu().numpy()
    metrics = classification_metrics(split.targets.cpu().numpy(), predictions, dataset.meta["class_names"])
    return metrics | {"predictions": predictions.tolist()}
