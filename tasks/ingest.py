"""Prefect task: store the dataset version of a config's files."""

from keel.core.contracts import IngestedVersion
from keel.stages.ingest import ingest_stage
from tasks import REMOTE, keel_task


@keel_task("ingest", REMOTE)
def ingest_dataset(dataset_config: str) -> IngestedVersion:
    """The stored dataset version (path and id); reuses an identical one. Retried: sources may be remote."""
    return ingest_stage(dataset_config)
