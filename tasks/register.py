"""Prefect task: register the model in MLflow with tags and aliases."""

from prefect import task
from prefect.artifacts import create_markdown_artifact

from keel.stages.pipeline import register_stage
from tasks import REMOTE, redacted_errors


@task(name="register", **REMOTE)
@redacted_errors
def register_model(run: dict, version: dict, trained: dict, metrics: dict, model_name: str | None = None) -> dict:
    """The registered model name, version number, aliases and URI."""
    registered = register_stage(run["run_id"], version["version_dir"], trained["model_path"], metrics, model_name)
    create_markdown_artifact(
        key="registered-model",
        markdown=(f"# Registered `{registered['name']}` version {registered['version']}\n\n"
                  f"alias: challenger; run `{registered['run_id']}`\n\n"
                  + "\n".join(f"- {k}: `{v}`" for k, v in registered["tags"].items())),
        description="MLflow model registry")
    return registered
