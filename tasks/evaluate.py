"""Prefect task: evaluation-split metrics, logged to MLflow and shown as artifacts."""

from prefect import task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

from keel.training.evaluate import metrics_markdown
from keel.stages.pipeline import evaluate_stage
from keel.tracking.client import artifact_url
from tasks import REMOTE, redacted_errors


@task(name="evaluate", **REMOTE)
@redacted_errors
def evaluate_model(run: dict, version: dict, trained: dict) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall for the evaluation split (and test files)."""
    metrics = evaluate_stage(run["run_id"], version["version_dir"], trained["model_path"])
    for part, values in metrics.items():
        create_markdown_artifact(key=f"{part}-metrics", markdown=metrics_markdown(
            f"{part} split" + (f" ({version['split']})" if part == "evaluation" and version.get("split") else ""), values),
                                 description=f"{part} split metrics, run {run['run_id']}")
        create_table_artifact(key=f"{part}-per-class", table=values["per_class"],
                              description=f"{part} split per-class precision and recall")
        for figure, words in (("confusion_matrix", "confusion matrix"), ("worst_classified", "worst-classified images")):
            create_image_artifact(image_url=artifact_url(run["run_id"], values[f"{figure}_png"], "evaluation"),
                                  key=f"{part}-{figure.replace('_', '-')}", description=f"{part} split: {words}")
    return metrics
