"""Prefect tasks: pin the model version, then score the input files: as one job, or one part
per input file (keel.serving.parts: the tasks a Dask task runner maps over the files)."""

from prefect.artifacts import create_markdown_artifact

from keel.tracking import client as tracking
from keel.serving.parts import check_parts, claim_parts_folder, part_inputs, score_part, write_job_manifest
from keel.serving.outputs import check_output
from keel.serving.predict import score_files
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
    return {"name": ref.name, "version": ref.version, "run_id": ref.run_id, "reference": reference,
            "inputs": ref.inputs}


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


@keel_task("claim-parts-folder")
def claim_parts_output(input_path: str, output: str, fmt: str) -> str:
    """The parts job's output folder, checked before any work (never retried: a wrong folder
    is the user's to fix) and marked as Keel's."""
    return claim_parts_folder(input_path, output, fmt)


@keel_task("list-inputs", REMOTE)
def list_part_inputs(input_path: str, model: dict) -> list[str]:
    """The input files, one part each (a bucket listing may meet an outage: retried)."""
    return part_inputs(input_path, model["inputs"])


@keel_task("score-part", RESUMABLE)
def score_input_part(model: dict, input_file: str, folder: str, fmt: str, force: bool, id_column: str) -> dict:
    """One input file scored into its part, on whichever worker runs it. A corrupt file fails
    this part alone and at once (a KeelError); an outage is retried for this part only. The
    part's files are written atomically, so a retry is safe."""
    return score_part(tracking.client(), model, input_file, folder, fmt, force, id_column)


@keel_task("write-parts-manifest", REMOTE)
def write_parts_manifest(model: dict, input_path: str, folder: str, fmt: str, files: list[str], outcomes: list) -> dict:
    """The job manifest listing every part: each outcome is a part's entry or its task's error."""
    return write_job_manifest(folder, model, input_path, fmt, files, outcomes)


@keel_task("check-parts")
def check_scored_parts(manifest: dict) -> dict:
    """The job's summary; fails naming the files whose parts failed (never retried: the parts
    themselves were)."""
    return check_parts(manifest)
