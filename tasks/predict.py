"""Prefect tasks: pin the model version, then score the input files."""

from prefect.artifacts import create_markdown_artifact

from keel.tracking import client as tracking
from keel.serving.predict import check_output, score_files
from keel.tracking.registry import resolve_model
from tasks import REMOTE, RESUMABLE, keel_task


@keel_task("check-output")
def check_output_location(input_path: str, output: str, fmt: str) -> str:
    """The output path, checked before the model is looked up or a row scored: not the input
    nor inside the input folder, an extension that matches the format, a folder that can be
    written (a user's mistake fails here at once, never retried)."""
    return check_output(input_path, output, fmt).output


@keel_task("resolve-model", REMOTE)
def resolve_model_version(reference: str) -> dict:
    """NAME, NAME@alias or NAME/version pinned to one version for the whole job."""
    ref = resolve_model(tracking.client(), reference)
    return {"name": ref.name, "version": ref.version, "run_id": ref.run_id, "reference": reference}


@keel_task("score", RESUMABLE)
def score_batch(model: dict, input_path: str, output: str, fmt: str, force: bool, id_column: str) -> dict:
    """The scoring summary. Outputs are written atomically, so a retry is safe."""
    summary = score_files(tracking.client(), f"{model['name']}/{model['version']}", input_path, output,
                          fmt=fmt, force=force, id_column=id_column)
    create_markdown_artifact(
        key="batch-scoring",
        markdown=f"# Batch scoring with {model['name']} v{model['version']}\n\n```\n{summary.text()}\n```",
        description=f"{summary.rows_scored} scored, {summary.rows_rejected} rejected")
    return summary.to_dict() | {"text": summary.text()}
