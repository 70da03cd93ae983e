"""Prefect tasks of the pre-training flow: open (or resume) the run, pre-train, score masked
tokens on the evaluation rows, register the fill-mask model."""

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from keel.core.contracts import RegisteredVersion, RunRef, TrainingSummary, VersionRef
from keel.stages.pretrained_registration import register_pretrained_stage
from keel.stages.pretraining import evaluate_pretrained_stage, pretrain_run_stage, pretrain_stage
from keel.core.pretrain_config import PretrainConfig
from tasks import REMOTE, RESUMABLE, keel_task


@keel_task("start-pretraining", REMOTE)
def start_pretraining(dataset_config: str, version: VersionRef, pretrain: PretrainConfig, fresh: bool = False) -> RunRef:
    """The MLflow run id and checkpoint folder; an interrupted identical pre-training is resumed."""
    return pretrain_run_stage(dataset_config, version, pretrain, fresh, on_wait=get_run_logger().warning)


@keel_task("pretrain", RESUMABLE)
def pretrain_model(run: RunRef, version: VersionRef, pretrain: PretrainConfig) -> TrainingSummary:
    """Path of the pre-trained model and the training summary. A retry resumes from the last epoch's checkpoint."""
    return pretrain_stage(run, version, pretrain)


@keel_task("evaluate-masked", REMOTE)
def evaluate_pretrained(run: RunRef, version: VersionRef, trained: TrainingSummary, pretrain: PretrainConfig) -> dict:
    """Masked-token accuracy, top-k accuracy and perplexity on the evaluation rows."""
    metrics = evaluate_pretrained_stage(run, version, trained, pretrain)
    values = metrics["evaluation"]
    create_markdown_artifact(key="evaluation-masked-tokens", description=f"masked-token metrics, run {run.run_id}", markdown=(
        f"# Masked tokens of the evaluation split\n\naccuracy **{values['masked_accuracy']:.4f}**, top-{values['top_k']} "
        f"accuracy **{values['masked_top_k_accuracy']:.4f}**, perplexity {values['perplexity']:.1f} on "
        f"{values['masked_tokens']} tokens of {values['rows']} texts"))
    return metrics


@keel_task("register-pretrained", REMOTE)
def register_pretrained(run: RunRef, version: VersionRef, trained: TrainingSummary, metrics: dict,
                        model_name: str | None, alias: str) -> RegisteredVersion:
    """The registered fill-mask model's name, version and URI; `alias` points at it."""
    registered = register_pretrained_stage(run, version, trained, metrics, model_name, alias)
    create_markdown_artifact(
        key="registered-model",
        markdown=(f"# Registered `{registered.name}` version {registered.version}\n\nalias: {alias}; run "
                  f"`{registered.run_id}`; fine-tune a classifier from it with `keel train --model bert-tiny "
                  f"--backbone models:/{registered.name}@{alias}`\n\n"
                  + "\n".join(f"- {k}: `{v}`" for k, v in registered.tags.items())),
        description="MLflow model registry")
    return registered
