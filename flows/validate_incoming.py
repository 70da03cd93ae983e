"""Flows for incoming data.

- `validate_incoming_flow`: validate a landed batch -> (if asked and accepted) add it to the
  curated training data. Run it as `keel validate --dataset NAME --input PATH`.
- `profile_flow`: ingest the reference -> infer the suite and train the anomaly scorer.
  Run it as `keel validate profile --dataset NAME`.
"""

from __future__ import annotations

from prefect import flow

from tasks.incoming import curate_batch, profile_reference, validate_batch
from tasks.ingest import ingest_dataset


@flow(name="keel-validate-incoming", log_prints=True)
def validate_incoming_flow(
    dataset_config: str,
    input_path: str,
    report_dir: str | None = None,
    labels_path: str | None = None,
    id_column: str = "id",
    curate: bool = False,
) -> dict:
    """Validates one landed file against the dataset's suite; curates it when accepted and asked to."""
    result = validate_batch(dataset_config, input_path, report_dir, labels_path, id_column)
    if curate and result["accepted"]:
        result["curated"] = curate_batch(dataset_config, result["report_dir"])
    return result


@flow(name="keel-profile-reference", log_prints=True)
def profile_flow(dataset_config: str, out: str | None = None, epochs: int = 5) -> dict:
    """Infers the dataset's expectation suite (and anomaly scorer) from its current version."""
    version = ingest_dataset(dataset_config)
    return profile_reference(dataset_config, version, out, epochs)


if __name__ == "__main__":
    import sys

    from flows.cli import entry

    sys.argv.insert(1, "validate")
    entry()
