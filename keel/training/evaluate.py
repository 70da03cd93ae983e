"""Metrics on the evaluation split: accuracy, macro-F1, per-class precision and recall."""

from __future__ import annotations

import numpy as np


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predictions), 1)
    return matrix


def classification_metrics(targets: np.ndarray, predictions: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support, plus the confusion matrix."""
    n = len(class_names)
    matrix = confusion_matrix(targets, predictions, n)
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    actual = matrix.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        recall = np.where(actual > 0, true_positive / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = actual > 0  # macro-F1 over the classes that occur in the split
    return {
        "accuracy": float(true_positive.sum() / max(1, len(targets))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "rows": int(len(targets)),
        "per_class": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, actual)
        ],
        "confusion_matrix": matrix.tolist(),
    }


def metrics_markdown(title: str, metrics: dict) -> str:
    """A markdown summary and per-class table of `classification_metrics` output."""
    lines = [f"# {title}", "",
             f"accuracy **{metrics['accuracy']:.4f}**, macro-F1 **{metrics['macro_f1']:.4f}** on {metrics['rows']} rows", "",
             "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for row in metrics["per_class"]:
        lines.append(f"| {row['class']} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    return "\n".join(lines)
