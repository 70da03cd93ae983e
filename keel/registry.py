"""Compatibility: keeps model versions registered before the sub-packages loadable by MLflow's
own loaders. Their models-from-code file (mlflow_pixel_classifier.py, mlflow_anomaly_scorer.py)
runs `from keel.registry import PixelClassifier` (or `AnomalyScorer`), and in a process that
has Keel imported (`mlflow.pyfunc.load_model` beside Keel, a notebook, a Spark UDF) that name
resolves to this package, not the copy of Keel bundled with the model. The classes now live in
keel.serving.pyfunc; the artifacts they read (weights.pt, model_config.json) are unchanged.
Keel's own verified loader never runs those files and does not need this module. Remove it once
no such version is loaded any more (tests/component/test_registry.py loads one)."""

from keel.serving.pyfunc import AnomalyScorer, PixelClassifier

__all__ = ["AnomalyScorer", "PixelClassifier"]
