"""The profile flow: ingest the reference -> infer the expectation suite and train (and
register) the anomaly scorer that `keel validate` checks landed data with.

Run it as `keel validate profile --dataset NAME`.
"""

from __future__ import annotations

from prefect import flow

from tasks.ingest import ingest_dataset
from tasks.reference_profile import profile_reference


@flow(name="keel-profile-reference", log_prints=True)
def profile_flow(dataset_config: str, out: str | None = None, epochs: int = 5) -> dict:
    """Infers the dataset's expectation suite (and anomaly scorer) from its current version."""
    version = ingest_dataset(dataset_config)
    return profile_reference(dataset_config, version, out, epochs)
