"""Prefect task: the champion/challenger gate."""

from prefect.artifacts import create_markdown_artifact

from keel.core.contracts import RegisteredVersion, VersionRef, Verdict
from keel.stages.registration import promote_stage
from keel.tracking.promotion import PromotionPolicy
from tasks import REMOTE, keel_task
from tasks.links import mlflow_markdown


@keel_task("promote", REMOTE)
def promote_model(version: VersionRef, registered: RegisteredVersion, metrics: dict, policy: PromotionPolicy) -> Verdict:
    """The verdict: whether the new version became champion, and why (in words and figures)."""
    verdict = promote_stage(version, registered, metrics, policy)
    lines = [f"# {registered.name} v{registered.version}: {verdict.text().split(':')[0]}", ""]
    lines += [f"- {reason}" for reason in verdict.reasons]
    lines += ["", f"Both models scored on the evaluation split `{verdict.evaluation_ids_sha256}`."]
    lines += ["", mlflow_markdown(model=(registered.name, registered.version))]
    create_markdown_artifact(key="promotion-verdict", markdown="\n".join(lines),
                             description=f"gate verdict for {registered.name} v{registered.version}")
    return verdict
