"""Prefect task: infer a dataset's expectation suite and register its anomaly scorer."""

from prefect.artifacts import create_markdown_artifact

from keel.core.contracts import VersionRef
from keel.stages.profiling import profile_stage
from tasks import keel_task


@keel_task("profile-reference")
def profile_reference(dataset_config: str, version: VersionRef, out: str | None, epochs: int) -> dict:
    """The inferred suite's path and the registered autoencoder's URI."""
    result = profile_stage(dataset_config, version, out, epochs)
    if "lines" in result:  # a text suite: its drift reference, no anomaly scorer
        create_markdown_artifact(key="inferred-suite", description="Expectation suite and drift reference", markdown=(
            f"# Suite inferred from {version.dataset} `{version.version}`\n\n"
            f"- suite: `{result['suite_path']}` ({result['expectations']} expectations)\n"
            + "".join(f"- {line}\n" for line in result["lines"])))
        return result
    create_markdown_artifact(
        key="inferred-suite",
        markdown=(f"# Suite inferred from {version.dataset} `{version.version}`\n\n"
                  f"- suite: `{result['suite_path']}` ({result['expectations']} expectations)\n"
                  f"- autoencoder: `{result['model_uri']}`, threshold {result['threshold']:.4g}\n"
                  + "".join(f"- {k.replace('_', ' ')}: {v:.1%}\n" for k, v in result["behaviour"].items())),
        description="Expectation suite and anomaly scorer")
    return result
