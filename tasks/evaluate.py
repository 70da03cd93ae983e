"""Prefect task: evaluation-split metrics, logged to MLflow and shown as artifacts."""

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from keel.core.contracts import IngestedVersion, RunRef, TrainingSummary
from keel.stages.evaluation import evaluate_stage
from keel.core.ui_links import png_data_uri
from keel.training.evaluate import metrics_markdown
from tasks import REMOTE, keel_task
from tasks.links import mlflow_markdown


@keel_task("evaluate", REMOTE)
def evaluate_model(run: RunRef, version: IngestedVersion, trained: TrainingSummary) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall for the evaluation split (and test files)."""
    metrics = evaluate_stage(run, version, trained)
    for part, values in metrics.items():
        create_markdown_artifact(key=f"{part}-metrics", markdown=metrics_markdown(
            f"{part} split" + (f" ({version.split})" if part == "evaluation" and version.split else ""), values),
                                 description=f"{part} split metrics, run {run.run_id}")
        create_table_artifact(key=f"{part}-per-class", table=values["per_class"],
                              description=f"{part} split per-class precision and recall")
        for figure, words in (("confusion_matrix", "confusion matrix"), ("worst_classified", "worst-classified images")):
            if f"{figure}_png" in values:  # texts: the worst-classified ones come as a table
                # The picture itself, not an address: it shows offline and without any server.
                create_markdown_artifact(
                    key=f"{part}-{figure.replace('_', '-')}", description=f"{part} split: {words}",
                    markdown=f"![{part} split: {words}]({png_data_uri(values[f'{figure}_png'])})\n\n"
                             f"{mlflow_markdown(run.experiment_id, run.run_id)}")
        if "worst_classified_markdown" in values:
            create_markdown_artifact(key=f"{part}-worst-classified", markdown=values["worst_classified_markdown"],
                                     description=f"{part} split: worst-classified texts (lowest probability of the true class)")
    return metrics
