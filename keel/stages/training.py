"""The training stage: train (resuming from the run's checkpoint), in one process or
data-parallel in several (`nproc`), log the epochs and curves, save the model with its spec
(and a text model's tokenizer beside it); and the augmentation preview that goes with it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from mlflow.entities import Metric

from keel.core import settings
from keel.core.atomic import atomic_path
from keel.core.config import AugmentConfig, TrainConfig
from keel.core.contracts import ModelSpec, RunRef, TrainingSummary, VersionRef
from keel.core.plots import image_grid, learning_curves
from keel.data.versions import DatasetVersion
from keel.data.batches import to_float
from keel.modalities import modality_for
from keel.models.device import select_device, set_threads
from keel.models.networks import build_model, inference_model
from keel.models.text import build_text_model
from keel.serving.masked_lm import load_backbone
from keel.stages.ingest import stored
from keel.tracking import client as tracking
from keel.training.distributed import launch, refuse_unsupported
from keel.training.loop import EpochCallback, TrainResult
from keel.training.train import train

TOKENIZER_FILE = "tokenizer.json"  # a text model's tokenizer, beside its model.pt


def augmentation_preview_stage(run: RunRef, version: VersionRef, augment: AugmentConfig, seed: int = 0,
                               count: int = 32) -> str:
    """A PNG grid of augmented training images, logged to the run; returns its path ("" for
    texts, which are not augmented)."""
    dataset = stored(version)
    if dataset.meta.get("image") is None:
        return ""
    rows = np.sort(dataset.indices("train")[:count // 2])
    raw = torch.from_numpy(np.asarray(dataset.images()[rows])).permute(0, 3, 1, 2).contiguous()
    images = to_float(raw)
    # What training does to them (photos: as the DataLoader workers do, at the stored size).
    photos = dataset.meta["format"] == "image-folder"
    config = TrainConfig(augment=augment, **({"image_size": dataset.meta["image"]["height"]} if photos else {}))
    augmented = modality_for(dataset).augment(raw, config, torch.Generator().manual_seed(seed))
    # Each original above its augmented copy.
    grid = torch.stack([images, augmented], dim=1).reshape(-1, *images.shape[1:]).numpy()
    path = settings.reports_dir() / "runs" / run.run_id / "augmentation_grid.png"
    image_grid(grid, path, columns=8)
    tracking.client().log_artifact(run.run_id, str(path), artifact_path="augmentation")
    return str(path)


def train_stage(run: RunRef, version: VersionRef, train_config: TrainConfig, progress: bool | None = None,
                nproc: int = 1) -> TrainingSummary:
    """Trains (resuming from the run's checkpoint, whatever `nproc` wrote it), logs each epoch's
    metrics in one batch call, the learning curves and the best weights; returns the saved model
    and how it went. `nproc` > 1: data-parallel in that many processes (keel.training.distributed),
    pixel tables only; rank 0 logs the epochs and writes the checkpoint, this process the rest."""
    set_threads()
    client = tracking.client()
    dataset = stored(version)
    device = select_device(train_config.device)
    folder = Path(run.checkpoint_dir)
    log_epoch = epoch_logger(client, run.run_id)
    if nproc != 1:
        refuse_unsupported(nproc, train_config, dataset.meta["format"])
        result = launch(nproc, device, _train_rank, version, train_config, folder / "last.pt", log_epoch, progress)
    else:
        parent = None
        if train_config.backbone:  # a registered model's features (an image model's, a text model's encoder) start this one
            parent = load_backbone(train_config.backbone)
        result = train(dataset, train_config, device, folder / "last.pt", on_epoch_end=log_epoch, progress=progress,
                       parent=parent)
    if result.pretrained is not None:  # a transfer network
        client.set_tag(run.run_id, "keel.pretrained", result.pretrained)
        client.set_tag(run.run_id, "keel.phase_boundary_epoch", str(result.phase_boundary))
    planned_epochs = log_training(client, run.run_id, result, log_epoch)
    spec = model_spec(dataset, with_tokenizer(result.record, folder))
    return saved_model(folder / "model.pt", result, spec.model_dump(), planned_epochs)


def _train_rank(device: torch.device, version: VersionRef, train_config: TrainConfig, checkpoint: Path,
                on_epoch_end: EpochCallback, progress: bool | None) -> TrainResult:
    """One process of data-parallel training (keel.training.distributed.launch runs it in each):
    the same call on every rank; the loop lets rank 0 alone touch the checkpoint and the run."""
    return train(stored(version), train_config, device, checkpoint, on_epoch_end=on_epoch_end, progress=progress)


class EpochLogger:
    """The loop's `on_epoch_end`: each epoch's metrics logged to run `run_id` in one batch call.
    It pickles without its client: rank 0 of data-parallel training logs with one of its own."""

    def __init__(self, client, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def __getstate__(self) -> dict:
        return {"client": None, "run_id": self.run_id}

    def __call__(self, epoch: int, metrics: dict, _model) -> None:
        if self.client is None:
            self.client = tracking.client()
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()])


def epoch_logger(client, run_id: str) -> EpochCallback:
    """The loop's `on_epoch_end` logging to run `run_id` (EpochLogger)."""
    return EpochLogger(client, run_id)


def with_tokenizer(record: dict, folder: Path) -> dict:
    """A network's record for its spec: a text model's tokenizer (`tokenizer_source`) copied into
    `folder` beside the weights, named by `tokenizer`; other records as they are."""
    record = dict(record)
    tokenizer = record.pop("tokenizer_source", None)
    if tokenizer is not None:  # a text model reads with this file: it travels with the weights
        with atomic_path(folder / TOKENIZER_FILE) as tmp:
            shutil.copyfile(tokenizer, tmp)
        record["tokenizer"] = TOKENIZER_FILE
    return record


def saved_model(model_path: Path, result: TrainResult, model_config: dict, planned_epochs: int) -> TrainingSummary:
    """Saves the trained weights with their JSON-able config at `model_path` (atomically) and
    returns how training went."""
    with atomic_path(model_path) as tmp:
        torch.save({"state_dict": result.model.state_dict(), "model_config": model_config}, tmp)
    return TrainingSummary(
        model_path=str(model_path), epochs_run=result.epochs_run, best_epoch=result.best_epoch,
        stopped_early=result.stopped_early, resumed_from_epoch=result.resumed_from_epoch,
        train_seconds=result.train_seconds, loop_seconds=result.loop_seconds, device=result.device,
        precision=result.precision, planned_epochs=planned_epochs, stop_reason=result.stop_reason,
        history=result.history)


def log_training(client, run_id: str, result: TrainResult, log_epoch) -> int:
    """Logs what the run lacks of the epochs, the loop's figures and the learning curves;
    returns the epochs the schedule spans."""
    # A run killed between an epoch's checkpoint and its log_batch resumes after that epoch:
    # log what the checkpoint holds but MLflow never received.
    logged = {m.step for m in client.get_metric_history(run_id, "val_accuracy")}
    for row in result.history:
        if row["epoch"] not in logged:
            log_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"}, None)
    # The epochs the schedule spans: the time budget may plan fewer than --epochs (the transfer
    # loop plans none: its count is the epochs run).
    planned_epochs = result.planned_epochs or result.epochs_run
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[
        Metric("best_epoch", result.best_epoch, now, 0),
        Metric("train_seconds", result.train_seconds, now, 0),
        Metric("loop_seconds", result.loop_seconds, now, 0),
        Metric("planned_epochs", planned_epochs, now, 0),
    ])
    client.set_tag(run_id, "keel.device", result.device)
    client.set_tag(run_id, "keel.precision", result.precision)
    curves = learning_curves(result.history, settings.reports_dir() / "runs" / run_id / "learning_curves.png",
                             phase_boundary=result.phase_boundary)
    client.log_artifact(run_id, str(curves), artifact_path="training")
    return planned_epochs


def model_spec(version: DatasetVersion, record: dict) -> ModelSpec:
    """How to rebuild and feed the trained network (saved with it, logged with the registered
    model): what the modality built (its record: architecture, and as the model needs them the
    image shape, pixel columns, build, input, pretrained weights, tokenizer, text column and
    length), the classes and where the data came from."""
    return ModelSpec(
        **record,
        labels=version.meta["labels"],
        class_names=version.meta["class_names"],
        label_column=version.meta["label_column"],
        inference_precision="auto",
        dataset=version.name,
        dataset_version=version.id,
    )


def load_trained(model_path: str, for_inference: bool = False) -> tuple[torch.nn.Module, ModelSpec]:
    """The model and its spec saved by train_stage (as served, when `for_inference`)."""
    saved = torch.load(model_path, map_location="cpu", weights_only=False)
    spec = ModelSpec.model_validate(saved["model_config"])
    if spec.input == "text":
        model = build_text_model(spec.build, len(spec.labels))
    else:
        image = spec.image
        model = build_model(spec.architecture, image.channels, image.height, image.width, len(spec.labels),
                            **(spec.build or {}))
    model.load_state_dict(saved["state_dict"])
    if for_inference:
        model = inference_model(model)
    return model.to(memory_format=torch.channels_last).eval(), spec


def scoring_config(model_path: str, spec: ModelSpec) -> dict:
    """The model config a modality's `model_inputs` and `preprocess` take: the spec, and for a
    text model the absolute path of its tokenizer (`tokenizer_file`: known at run time only,
    never logged)."""
    config = spec.model_dump()
    if spec.tokenizer:
        config["tokenizer_file"] = str(Path(model_path).parent / spec.tokenizer)
    return config
