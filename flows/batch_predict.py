"""The batch scoring flows: pin the model version -> score the files -> write predictions.

Run them as `keel predict --model NAME[@alias|/version] --input PATH --output PATH`, one job,
or with `--workers N` / `--dask-address ADDRESS`: one part per input file, mapped over the Dask
task runner the command gives the parts flow (`flow.with_options(task_runner=...)`).
"""

from __future__ import annotations

from typing import Literal

from prefect import allow_failure, flow, unmapped

from keel.core.io import refuse_credentials
from tasks.predict import (check_output_location, check_scored_parts, claim_parts_output, list_part_inputs,
                           resolve_model_version, score_batch, score_input_part, write_parts_manifest)


@flow(name="keel-batch-predict", log_prints=True)
def batch_predict_flow(
    model: str,
    input_path: str,
    output: str,
    format: Literal["parquet", "csv", "jsonl"] = "parquet",
    force: bool = False,
    id_column: str = "id",
) -> dict:
    """Scores a file, or every CSV/parquet file in a folder (a text model: JSONL too), with one
    registered model version.

    Args:
        model: NAME (= NAME@champion), NAME@alias or NAME/version in the MLflow registry.
        input_path: A CSV (gzip or not) or parquet file (a text model: or JSONL), or a folder of
            them; for an image model, photos; a path or fsspec URL.
        output: The predictions file (a path or fsspec URL); {date} becomes the UTC date of the run.
        format: Output format of the predictions and errors files; an output whose name ends in
            a known extension of another format (.parquet/.pq, .csv, .jsonl/.json/.ndjson, each
            but parquet with an optional .gz that means gzip) is refused.
        force: Score again even if this model version already scored these exact inputs.
        id_column: Column that identifies rows (row numbers when absent).
    """
    refuse_credentials(input_path, "input_path")  # credentials belong in the environment, not in stored parameters
    refuse_credentials(output, "output")
    check_output_location(input_path, output, format)  # before the model is even looked up
    pinned = resolve_model_version(model)
    return score_batch(pinned, input_path, output, format, force, id_column)


@flow(name="keel-batch-predict-parts", log_prints=True)
def batch_predict_parts_flow(
    model: str,
    input_path: str,
    output: str,
    format: Literal["parquet", "csv", "jsonl"] = "parquet",
    force: bool = False,
    id_column: str = "id",
) -> dict:
    """Scores each input file into its own part, the files side by side on the flow's task
    runner (a DaskTaskRunner from `keel predict --workers/--dask-address`), and writes the
    job manifest (keel.serving.parts).

    Args:
        model: NAME (= NAME@champion), NAME@alias or NAME/version, pinned once for every part.
        input_path: A CSV (gzip or not) or parquet file (a text model: or JSONL), or a folder of
            them; a path or fsspec URL.
        output: The output FOLDER: parts/<input file name>.<format> per input file and
            manifest.json; a new or empty folder, or one an earlier parts job wrote.
        format: Output format of each part and its errors file.
        force: Score every part again even where this model version already scored its file.
        id_column: Column that identifies rows (row numbers when absent).
    """
    refuse_credentials(input_path, "input_path")
    refuse_credentials(output, "output")
    folder = claim_parts_output(input_path, output, format)  # before the model is even looked up
    pinned = resolve_model_version(model)
    files = list_part_inputs(input_path, pinned)
    parts = score_input_part.map(unmapped(pinned), files, unmapped(folder), unmapped(format), unmapped(force),
                                 unmapped(id_column))
    # A failed part reaches the manifest as its error, beside the others' entries.
    manifest = write_parts_manifest(pinned, input_path, folder, format, files, [allow_failure(p) for p in parts])
    return check_scored_parts(manifest)
