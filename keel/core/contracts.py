"""The typed contracts between stages, tasks and flows.

What a stage (keel.stages) returns and a Prefect task passes on is one of these small pydantic
models, not a free-form dict: the flow chains them, Prefect shows them as task inputs, and a
reader sees in one place which fields travel. Each stays small (a few hundred bytes; a training
summary also carries its per-epoch history), since Prefect may store them with every task run.

Files keep their formats: a model is dumped (`model_dump()`) where it meets a file, a tag or
MLflow, never pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_serializer

from keel.core.config import ImageShape


class Contract(BaseModel):
    """A result that crosses from one stage or task to the next."""

    model_config = ConfigDict(extra="forbid")


class VersionRef(Contract):
    """A stored dataset version."""

    dataset: str
    version: str  # the content-addressed id
    version_dir: str

    @property
    def path(self) -> Path:
        return Path(self.version_dir)


class IngestedVersion(VersionRef):
    """What ingest stored (or reused), with the evaluation split every later figure comes from."""

    rows: int
    reused: bool
    seconds: float
    evaluation_ids_sha256: str | None = None
    split: str = ""  # the split in words ("" when no split could be drawn)
    leakage: dict[str, Any] = {}  # of the evaluation rows: near_copy_share, nn_accuracy, rows, examples


class RunRef(Contract):
    """The MLflow run of a training and the folder of its resume state."""

    run_id: str
    experiment_id: str
    checkpoint_dir: str
    resumed: bool = False  # an interrupted identical run, continued


class TrainingSummary(Contract):
    """What training produced (the saved model) and how it went."""

    model_path: str
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int
    train_seconds: float  # the epochs' training passes alone
    loop_seconds: float  # the whole epoch loop: training, validation passes, checkpoints
    device: str
    precision: str
    planned_epochs: int  # what the schedule spans: the time budget may plan fewer than asked
    stop_reason: str | None = None  # "patience" or "time budget" when stopped early
    history: list[dict[str, int | float]] = []  # one row per epoch: epoch, losses, accuracies


class RegisteredVersion(Contract):
    """A model version Keel registered (the challenger of its gate)."""

    name: str
    version: str
    model_uri: str
    run_id: str
    tags: dict[str, str] = {}


# Keys a model config holds only for some models (image-folder transfer models, text models):
# absent, not null, otherwise.
_OPTIONAL = ("build", "input", "pretrained", "tokenizer", "image", "text_column", "max_length")


class ModelSpec(BaseModel):
    """How to rebuild and feed a trained network: saved with its weights (`model_config` of the
    checkpoint) and logged with the registered model as model_config.json. Keys Keel does not
    know (a model registered by another version) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    architecture: str
    build: dict[str, Any] | None = None  # network builder arguments of a transfer model
    input: Literal["image", "text"] | None = None  # "image": scores photo files; "text": texts; else pixel rows
    pretrained: str | None = None  # the weights a transfer model started from
    image: ImageShape | None = None  # none for text models
    # Text models: the tokenizer file saved beside the weights (its name), the column of the
    # texts a scoring input holds, and the tokens per text (longer texts are truncated).
    tokenizer: str | None = None
    text_column: str | None = None
    max_length: int | None = None
    labels: list[int]
    class_names: list[str]
    label_column: str
    pixel_columns: list[str] = []  # the scoring input's columns (none for photo models)
    inference_precision: str = "auto"
    dataset: str
    dataset_version: str

    @property
    def image_input(self) -> bool:
        return self.input == "image"

    @model_serializer(mode="wrap")
    def _drop_image_only_nulls(self, handler) -> dict[str, Any]:
        # The on-disk format: pixel models' configs carry no build/input/pretrained/tokenizer keys.
        return {k: v for k, v in handler(self).items() if not (k in _OPTIONAL and v is None)}


class Verdict(Contract):
    """A gate decision (keel.tracking.promotion.decide) with its reasons in words and figures."""

    promote: bool
    reasons: list[str]
    challenger_version: str
    challenger_accuracy: float
    champion_version: str | None = None
    champion_accuracy: float | None = None
    evaluation_ids_sha256: str | None = None
    name: str | None = None  # the registered model both versions belong to
    # The paired comparison with the champion on the same rows (None without a champion).
    difference: float | None = None  # challenger accuracy - champion accuracy, (b - c) / rows
    ci_low: float | None = None  # paired bootstrap interval of the difference at the policy's confidence
    ci_high: float | None = None
    p_value: float | None = None  # McNemar's exact one-sided test: is the challenger better?
    b: int | None = None  # rows only the challenger gets right
    c: int | None = None  # rows only the champion gets right
    rows: int | None = None
    split: str | None = None  # what the evaluation rows are, in words

    def text(self) -> str:
        head = "promoted" if self.promote else "not promoted"
        return f"{head}: " + "; ".join(self.reasons)


class TrainingOutcome(Contract):
    """Everything the training flow did, for the summary `keel train` prints."""

    version: IngestedVersion
    validation: dict[str, Any]  # keel.validation.checks.ValidationReport, summarised
    run: RunRef
    trained: TrainingSummary
    metrics: dict[str, dict[str, Any]]  # classification_metrics per part ("evaluation", "test")
    registered: RegisteredVersion
    verdict: Verdict
