"""The batch scoring flow: pin the model version -> score the files -> write predictions.

Run it as `keel predict --model NAME[@alias|/version] --input PATH --output PATH`.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from keel.core.io import refuse_credentials
from tasks.predict import check_output_location, resolve_model_version, score_batch


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
