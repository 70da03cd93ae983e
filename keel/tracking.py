"""MLflow set-up: the embedded store in mlruns/ unless MLFLOW_TRACKING_URI names a server."""

from __future__ import annotations

import os
import subprocess

from keel import settings


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else a SQLite store inside mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{settings.mlruns_dir() / 'mlflow.db'}"


def embedded() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def client():
    """An MlflowClient for the configured store (creating mlruns/ for the embedded one)."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    if embedded():
        settings.mlruns_dir().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def experiment_id(mlflow_client, name: str) -> str:
    """The id of experiment `name`, created if new (its artifacts inside mlruns/ in embedded mode)."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = (settings.mlruns_dir() / "artifacts").as_uri() if embedded() else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:
        # Another run created it between our lookup and create.
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def git_commit() -> str:
    """The commit of the working tree Keel runs from ("+dirty" when it has changes), or "unknown"."""
    try:
        cwd = settings.home()
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
