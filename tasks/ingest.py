"""Prefect task: store the dataset version of a config's files."""

from prefect import task

from keel.stages.pipeline import ingest_stage
from tasks import REMOTE, redacted_errors


@task(name="ingest", **REMOTE)
@redacted_errors
def ingest_dataset(dataset_config: str) -> dict:
    """The stored dataset version (path and id); reuses an identical one. Retried: sources may be remote."""
    return ingest_stage(dataset_config)
