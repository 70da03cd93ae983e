"""Prefect task: register the model in MLflow with tags and aliases."""

from prefect.artifacts import create_markdown_artifact

from keel.core.contracts import RegisteredVersion, RunRef, TrainingSummary, VersionRef
from keel.stages.registration import register_stage
from tasks import REMOTE, keel_task
from tasks.links import mlflow_markdown


@keel_task("register", REMOTE)
def register_model(run: RunRef, version: VersionRef, trained: TrainingSummary, metrics: dict,
                   model_name: str | None = None) -> RegisteredVersion:
    """The registered model name, version number, aliases and URI."""
    registered = register_stage(run, version, trained, metrics, model_name)
    create_markdown_artifact(
        key="registered-model",
        markdown=(f"# Registered `{registered.name}` version {registered.version}\n\n"
                  f"alias: challenger; run `{registered.run_id}`\n\n"
                  f"{mlflow_markdown(run.experiment_id, registered.run_id, (registered.name, registered.version))}\n\n"
                  + "\n".join(f"- {k}: `{v}`" for k, v in registered.tags.items())),
        description="MLflow model registry")
    return registered
