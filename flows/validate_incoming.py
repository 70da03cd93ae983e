"""The incoming-data flow: validate a landed file (or each new file of a landing folder) ->
(if asked and accepted) add it to the curated training data.

Run it as `keel validate --dataset NAME --input PATH`, or through the `validate-incoming`
deployment, which `keel watch` triggers for every file that lands. The suite it checks against
comes from the profile flow (flows/reference_profile.py).
"""

from __future__ import annotations

from prefect import flow

from keel.validation.report import batches_summary
from keel.core.io import refuse_credentials
from tasks.incoming import curate_batch, pending_batches, validate_batch


@flow(name="keel-validate-incoming", log_prints=True)
def validate_incoming_flow(
    dataset_config: str,
    input_path: str,
    report_dir: str | None = None,
    labels_path: str | None = None,
    id_column: str = "id",
    curate: bool = False,
) -> dict:
    """Validates landed data against the dataset's suite; curates accepted batches when asked.

    Args:
        dataset_config: The dataset's YAML file (relative to the project folder, or absolute).
        input_path: A landed file (CSV, parquet or IDX; texts: CSV, parquet or JSONL), or a landing folder: then every file in
            it that has no validation report yet. A local path or an fsspec URL.
        report_dir: Report folder for a single file (default under reports/validation/).
        labels_path: IDX labels file that goes with an IDX images file.
        id_column: Column that identifies rows, when present.
        curate: Add the clean rows of accepted, labelled batches to the curated training data.
    """
    refuse_credentials(input_path, "input_path")  # credentials belong in the environment, not in stored parameters
    refuse_credentials(labels_path, "labels_path")
    files = pending_batches(dataset_config, input_path)
    results = []
    for path in files:
        result = validate_batch(dataset_config, path, report_dir if path == input_path else None, labels_path, id_column)
        if curate and result["accepted"]:
            result["curated"] = curate_batch(dataset_config, result["report_dir"])
        results.append(result)
    if files == [input_path]:
        return results[0]
    return batches_summary(input_path, results)
