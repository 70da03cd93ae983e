"""Prefect task: Great Expectations validation that stops the flow on bad data."""

from prefect.artifacts import create_markdown_artifact

from keel.core.contracts import VersionRef
from keel.core.errors import DataValidationError
from keel.stages.ingest import validate_stage
from tasks import keel_task
from tasks.links import data_docs_artifact


@keel_task("validate")
def validate_dataset(dataset_config: str, version: VersionRef) -> dict:
    """The validation summary; raises (failing the flow before training) when an expectation fails."""
    try:
        report = validate_stage(dataset_config, version)
    except DataValidationError as exc:
        _publish(exc.report)
        raise
    _publish(report)
    return {"success": report.success, "expectations": report.expectations, "rows": report.rows,
            "docs_index": report.docs_index, "seconds": report.seconds, "split": report.split,
            "leakage": report.leakage, "warnings": [w.sentence() for w in report.warnings]}


def _publish(report) -> None:
    create_markdown_artifact(key="data-validation", markdown=report.markdown(),
                             description=f"Great Expectations: {report.dataset} {report.version}")
    if report.docs_index:
        data_docs_artifact("data-docs", report.docs_index)
