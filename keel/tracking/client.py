"""MLflow set-up: the embedded store in mlruns/ unless MLFLOW_TRACKING_URI names a server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from keel.core import settings
from keel.core.secrets import has_credentials, strip_userinfo


# mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI for subprocesses; this remembers which
# value Keel itself put there, so the embedded store is not mistaken for a user's server.
_EMBEDDED_MARK = "KEEL_EMBEDDED_TRACKING_URI"


def embedded() -> bool:
    """True unless the user pointed MLFLOW_TRACKING_URI at a store of their own."""
    value = os.environ.get("MLFLOW_TRACKING_URI")
    return not value or value == os.environ.get(_EMBEDDED_MARK)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when the user set it, else a SQLite store inside mlruns/."""
    if embedded():
        return f"sqlite:///{settings.mlruns_dir() / 'mlflow.db'}"
    return os.environ["MLFLOW_TRACKING_URI"]


def client():
    """An MlflowClient for the configured store (creating mlruns/ for the embedded one)."""
    import mlflow
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri()
    if has_credentials(uri):
        # MLflow prints "View run ... at: <tracking URI>/#/..." to stdout when a run ends.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if embedded():
        settings.mlruns_dir().mkdir(parents=True, exist_ok=True)
        os.environ[_EMBEDDED_MARK] = uri
    mlflow.set_tracking_uri(uri)
    # The model registry lives in the same store (MLflow's default registry URI).
    return MlflowClient(tracking_uri=uri)


def registry_client():
    """A client of the model registry alone, for a command that only looks a version up (the
    idempotent re-run of `keel predict`). MlflowClient opens the tracking store as it is made,
    and with the embedded SQLite store that import alone is about a second; the registry
    client MlflowClient makes for its own registry calls opens only the registry store. Its
    lookups (get_model_version, get_model_version_by_alias) are MlflowClient's."""
    from mlflow.tracking._model_registry.client import ModelRegistryClient

    uri = tracking_uri()
    if embedded() and not (settings.mlruns_dir() / "mlflow.db").exists():
        return client()  # nothing registered yet: the full client creates the store
    return ModelRegistryClient(uri, uri)


# The MLflow UI opens an experiment on the view its kind calls for; without this tag it guesses,
# and an experiment of training runs can open on the GenAI traces page.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # "Machine learning" in the UI


def experiment_id(mlflow_client, name: str) -> str:
    """The id of experiment `name`, created if new (its artifacts inside mlruns/ in embedded mode),
    of the "Machine learning" kind: an existing one without a kind gets it, one whose kind a user
    chose keeps it."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        location = (settings.mlruns_dir() / "artifacts").as_uri() if embedded() else None
        try:
            return mlflow_client.create_experiment(name, artifact_location=location,
                                                   tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:
            # Another run created it between our lookup and create.
            experiment = mlflow_client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags and experiment.lifecycle_stage == "active":
        mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def artifact_url(run_id: str, local_file: str, artifact_path: str) -> str:
    """A browser address for a file logged to a run: the tracking server's artifact endpoint
    (without the credentials the tracking URI may hold: the browser asks for them), or the
    local copy's file:// URI in embedded mode."""
    if embedded():
        return Path(local_file).resolve().as_uri()
    from urllib.parse import quote

    return (f"{strip_userinfo(tracking_uri()).rstrip('/')}/get-artifact?path={quote(f'{artifact_path}/{Path(local_file).name}')}"
            f"&run_uuid={run_id}")


def git_commit() -> str:
    """The commit of the Keel checkout that runs ("+dirty" when it has changes); without git
    metadata (the Docker image has no .git), the commit the image was built from
    (KEEL_GIT_COMMIT, a build argument: Dockerfile), else "unknown"."""
    baked = os.environ.get("KEEL_GIT_COMMIT") or "unknown"
    try:
        cwd = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return baked
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return baked
