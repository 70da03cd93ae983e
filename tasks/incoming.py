"""Prefect tasks for incoming data: the landed batches to check, validating one, curating it."""

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from keel.stages.incoming import curate_stage, pending_stage, validate_incoming_stage
from tasks import REMOTE, keel_task
from tasks.links import data_docs_artifact


@keel_task("pending-batches", REMOTE)
def pending_batches(dataset_config: str, input_path: str) -> list[str]:
    """[input_path] for a file; for a landing folder, its files without a validation report."""
    return pending_stage(dataset_config, input_path)


@keel_task("validate-batch", REMOTE)
def validate_batch(dataset_config: str, input_path: str, report_dir: str | None, labels_path: str | None,
                   id_column: str) -> dict:
    """The batch's verdict, exit code and report paths. The report folder is replaced whole, so a retry is safe."""
    result = validate_incoming_stage(dataset_config, input_path, report_dir, labels_path, id_column)
    create_markdown_artifact(key="incoming-validation", markdown=result.markdown(),
                             description=f"{result.dataset}: {result.verdict}")
    data_docs_artifact("incoming-data-docs", result.files["docs_index"])
    if result.quarantined_rows:
        import pandas as pd

        reasons = pd.read_csv(result.files["quarantine"], nrows=200, keep_default_na=False)
        create_table_artifact(key="quarantine", table=reasons.astype(str).to_dict("records"),
                              description=f"First problems of {result.quarantined_rows} quarantined rows")
    return result.to_dict() | {"exit_code": result.exit_code, "accepted": result.accepted, "text": result.summary()}


@keel_task("curate-batch", REMOTE)
def curate_batch(dataset_config: str, report_dir: str) -> dict:
    """The new curated dataset version; adding the same clean rows twice adds them once."""
    return curate_stage(dataset_config, report_dir)
