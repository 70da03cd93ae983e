"""The stages of the training pipeline as plain functions of paths and ids.

Prefect tasks (tasks/) call these and add retries and artifacts; tests call them directly.
Each stage reads what it needs from disk or MLflow and returns small, JSON-friendly results.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from keel.core import settings

from keel.tracking.client import client as tracking
from keel.core.config import AugmentConfig, TrainConfig, load_dataset_config
from keel.data.datasets import DatasetVersion, ingest
from keel.core.errors import DataValidationError, KeelError
from keel.core.secrets import redact
from keel.validation.checks import ValidationReport, validate_version


def ingest_stage(dataset_config: str) -> dict:
    """Stores (or reuses) the dataset version of the config's files."""
    config = load_dataset_config(dataset_config)
    started = time.perf_counter()
    result = ingest(config)
    meta = result.version.meta
    return {
        "dataset": config.name, "version": meta["version"], "version_dir": str(result.version.path),
        "rows": meta["rows"], "reused": result.reused, "seconds": time.perf_counter() - started,
        "evaluation_ids_sha256": meta.get("evaluation_ids_sha256"),
        "split": result.version.split_description, "leakage": result.version.leakage.get("evaluation", {}),
    }


def split_tags(version: DatasetVersion) -> dict[str, str]:
    """Where a version's evaluation figures come from, as MLflow tags: the split's kind,
    method, threshold and groups, and how much of it leaks into training."""
    split = version.meta.get("evaluation_split", {})
    grouping = split.get("grouping", {})
    leak = version.leakage.get("evaluation")
    tags = {
        "keel.split": version.split_description,
        "keel.split.kind": split.get("name", "random"),
        "keel.split.method": grouping.get("method", ""),
        "keel.split.threshold": str(split.get("threshold", "")),
        "keel.split.groups": str(grouping.get("groups", "")),
        "keel.split.evaluation_rows": str(version.meta.get("evaluation_rows", "")),
    }
    if leak:
        tags["keel.leakage.near_copy_share"] = f"{leak['near_copy_share']:.4f}"
        tags["keel.leakage.nn_accuracy"] = f"{leak['nn_accuracy']:.4f}"
    return tags


def validation_docs_dir(dataset: str, version: str) -> Path:
    return settings.reports_dir() / "validation" / dataset / version


def validate_stage(dataset_config: str, version_dir: str) -> ValidationReport:
    """Runs the expectation suite; raises DataValidationError (carrying the report) on failure."""
    config = load_dataset_config(dataset_config)
    version = DatasetVersion(Path(version_dir))
    report = validate_version(version, config, validation_docs_dir(config.name, version.id))
    if not report.success:
        raise DataValidationError(f"data validation failed, training stopped:\n{report.summary()}", report)
    return report


def checkpoint_dir(dataset: str, version: str, train_config: TrainConfig) -> Path:
    from keel.training.train import config_key

    return settings.checkpoints_dir() / dataset / config_key(train_config, version)


# Run keys (checkpoint folders) whose training lock this process holds: path -> descriptor;
# and per key, the thread lock a thread of this process holds while it takes that lock.
_run_locks: dict[str, int] = {}
_taking: dict[str, threading.Lock] = {}
_run_locks_guard = threading.Lock()


def hold_run_lock(folder: Path, on_wait: Callable[[str], None] | None = None) -> None:
    """Takes the exclusive lock of the run key `folder` (an flock on `<folder>.lock` beside it),
    held until release_run_lock or the process ends; a kill -9 releases it too.

    Another process training the same key holds it from finding its run until the run is
    registered: then `on_wait` gets one line saying so and this call waits for it. Re-entrant
    per process (a retried task holds it already)."""
    path = Path(folder).with_name(Path(folder).name + ".lock")
    with _run_locks_guard:
        taking = _taking.setdefault(str(path), threading.Lock())
    with taking:  # one thread at a time per key: a second one finds it held and returns
        if str(path) in _run_locks:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                (on_wait or logging.getLogger(__name__).warning)(
                    f"another identical training ({_lock_holder(descriptor)}) is running; waiting for it to finish")
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(descriptor)
            raise
        with _run_locks_guard:
            _run_locks[str(path)] = descriptor


def _lock_holder(descriptor: int) -> str:
    """'pid N' of the process holding the lock file (it writes its pid once it holds it)."""
    for _ in range(20):
        text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return f"pid {text}"
        time.sleep(0.05)
    return "pid unknown"


def release_run_lock(folder: Path) -> None:
    """Releases the lock hold_run_lock took (if this process holds it); the lock file stays:
    removing it could let two processes lock two different files."""
    path = Path(folder).with_name(Path(folder).name + ".lock")
    with _run_locks_guard:
        descriptor = _run_locks.pop(str(path), None)
    if descriptor is not None:
        os.ftruncate(descriptor, 0)
        os.close(descriptor)


def experiment_name(dataset: str) -> str:
    """The MLflow experiment that holds a dataset's training runs."""
    return f"keel-{dataset}"


def prepare_tracking_stage(dataset_config: str) -> str:
    """Opens the tracking store (creating its tables on first use) and the dataset's
    experiment; returns the experiment id. Cheap when they exist."""
    config = load_dataset_config(dataset_config)
    return tracking.experiment_id(tracking.client(), experiment_name(config.name))


def start_run_stage(dataset_config: str, version_dir: str, train_config: TrainConfig, fresh: bool = False,
                    on_wait: Callable[[str], None] | None = None) -> dict:
    """An MLflow run for this training: the unfinished one of an interrupted identical run, else a new one.

    Takes the run key's lock first (hold_run_lock; register_stage releases it): an identical
    training that is running makes this one wait for it (`on_wait` hears it) and then train in
    a new run, since the finished run and its checkpoint are gone; one that was killed is resumed."""
    config = load_dataset_config(dataset_config)
    version = DatasetVersion(Path(version_dir))
    folder = checkpoint_dir(config.name, version.id, train_config)
    hold_run_lock(folder, on_wait)
    if fresh and folder.exists():
        shutil.rmtree(folder)
    client = tracking.client()
    experiment = tracking.experiment_id(client, experiment_name(config.name))
    marker = folder / "run.json"
    if marker.exists():
        run_id = json.loads(marker.read_text())["run_id"]
        run = _run_or_none(client, run_id)
        if run is not None and run.info.status != "FINISHED":
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "keel.resumed", "true")
            return {"run_id": run_id, "experiment_id": experiment, "checkpoint_dir": str(folder), "resumed": True}
        shutil.rmtree(folder)  # a finished run's leftovers: start over

    run = client.create_run(experiment, run_name=f"{train_config.model}-{version.id[:8]}", tags={
        "keel.dataset": config.name, "keel.dataset_version": version.id,
        "keel.git_commit": tracking.git_commit(), "mlflow.source.name": "keel train",
    })
    run_id = run.info.run_id
    from mlflow.entities import Metric, RunTag

    from keel.validation.checks import leakage_sentences

    tags = split_tags(version)
    sentences = leakage_sentences(version, config.validation.max_leaked_fraction)
    if sentences:
        tags["keel.leakage"] = sentences[0]
    leak = version.leakage.get("evaluation")
    now = int(time.time() * 1000)
    baselines = [Metric("baseline_1nn_evaluation_accuracy", leak["nn_accuracy"], now, 0),
                 Metric("evaluation_near_copy_share", leak["near_copy_share"], now, 0)] if leak else []
    client.log_batch(run_id, params=_params(train_config, config.name, version.id), metrics=baselines,
                     tags=[RunTag(k, redact(v)) for k, v in tags.items()])
    _log_dataset_input(client, run_id, version)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": run_id}))
    return {"run_id": run_id, "experiment_id": experiment, "checkpoint_dir": str(folder), "resumed": False}


def _run_or_none(client, run_id: str):
    """The run, or None when the store does not know it. Any other error (the tracking server
    is down) propagates: the checkpoint must not be thrown away because of an outage."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _params(train_config: TrainConfig, dataset: str, version: str) -> list:
    from mlflow.entities import Param

    flat = {"dataset": dataset, "dataset_version": version}
    for key, value in train_config.model_dump().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return [Param(k, redact(str(v))) for k, v in flat.items()]  # e.g. --weights may be a URL


def _log_dataset_input(client, run_id: str, version: DatasetVersion) -> None:
    """Records the dataset version as the run's MLflow dataset input (digest = version id)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow registers the local source twice and says so
        source = resolve_dataset_source(version.path.as_uri())
    dataset = MetaDataset(source=source, name=version.name, digest=version.id)
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                     tags=[InputTag("mlflow.data.context", "training")])])


def augmentation_preview_stage(run_id: str, version_dir: str, augment: AugmentConfig, seed: int = 0, count: int = 32) -> str:
    """A PNG grid of augmented training images, logged to the run; returns its path."""
    from keel.data.augment import augment_batch
    from keel.core.plots import image_grid
    from keel.training.train import to_float

    version = DatasetVersion(Path(version_dir))
    rows = np.sort(version.indices("train")[:count // 2])
    images = to_float(torch.from_numpy(np.asarray(version.images()[rows])).permute(0, 3, 1, 2).contiguous())
    generator = torch.Generator().manual_seed(seed)
    if version.meta["format"] == "image-folder":
        # What the DataLoader workers do to photos, at the stored size.
        from keel.training.transfer import AugmentedImages

        torch.manual_seed(seed)
        photos = AugmentedImages(np.asarray(version.images()[rows]), np.zeros(len(rows)),
                                 TrainConfig(augment=augment, image_size=version.meta["image"]["height"]))
        augmented = to_float(torch.stack([photos[i][0] for i in range(len(rows))]))
    else:
        augmented = augment_batch(images, augment, generator)
    # Each original above its augmented copy.
    grid = torch.stack([images, augmented], dim=1).reshape(-1, *images.shape[1:]).numpy()
    path = settings.reports_dir() / "runs" / run_id / "augmentation_grid.png"
    image_grid(grid, path, columns=8)
    tracking.client().log_artifact(run_id, str(path), artifact_path="augmentation")
    return str(path)


def train_stage(run_id: str, version_dir: str, train_config: TrainConfig, checkpoint_folder: str,
                progress: bool | None = None) -> dict:
    """Trains (resuming from the folder's checkpoint), logs each epoch's metrics in one batch
    call, the learning curves and the best weights; returns the path of the trained model."""
    from mlflow.entities import Metric

    from keel.core.plots import learning_curves
    from keel.training.train import fit, select_device, set_threads, training_splits

    set_threads()
    client = tracking.client()
    version = DatasetVersion(Path(version_dir))
    device = select_device(train_config.device)
    folder = Path(checkpoint_folder)
    image_folder = version.meta["format"] == "image-folder"
    if image_folder != train_config.transfer:
        raise KeelError(f"model {train_config.model} does not fit dataset {version.name}: image folders train "
                        f"vgg16, resnet18, mobilenet_v3_small or efficientnet_b0 (or --backbone models:/...); pixel "
                        "tables train cnn, mlp or cnn-wide")

    def log_epoch(epoch: int, metrics: dict, _model) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()])

    if image_folder:
        from keel.training.transfer import fit_transfer

        result = fit_transfer(version, train_config, device, folder / "last.pt", on_epoch_end=log_epoch)
        client.set_tag(run_id, "keel.pretrained", result.pretrained)
        client.set_tag(run_id, "keel.phase_boundary_epoch", str(result.phase_boundary))
    else:
        train, validation = training_splits(version, train_config, device)
        result = fit(train, validation, len(version.meta["labels"]), train_config,
                     checkpoint_path=folder / "last.pt", on_epoch_end=log_epoch, progress=progress)
    # A run killed between an epoch's checkpoint and its log_batch resumes after that epoch:
    # log what the checkpoint holds but MLflow never received.
    logged = {m.step for m in client.get_metric_history(run_id, "val_accuracy")}
    for row in result.history:
        if row["epoch"] not in logged:
            log_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"}, None)
    # The epochs the schedule spans: the time budget may plan fewer than --epochs (the transfer
    # loop plans none: its count is the epochs run).
    planned_epochs = result.planned_epochs or result.epochs_run
    client.log_batch(run_id, metrics=[
        Metric("best_epoch", result.best_epoch, int(time.time() * 1000), 0),
        Metric("train_seconds", result.train_seconds, int(time.time() * 1000), 0),
        Metric("loop_seconds", result.loop_seconds, int(time.time() * 1000), 0),
        Metric("planned_epochs", planned_epochs, int(time.time() * 1000), 0),
    ])
    client.set_tag(run_id, "keel.device", result.device)
    client.set_tag(run_id, "keel.precision", result.precision)
    curves = learning_curves(result.history, settings.reports_dir() / "runs" / run_id / "learning_curves.png",
                             phase_boundary=getattr(result, "phase_boundary", None))
    client.log_artifact(run_id, str(curves), artifact_path="training")

    model_path = folder / "model.pt"
    image = version.meta["image"]
    model_config = {
        "architecture": "transfer" if image_folder else train_config.model,
        **({"build": result.build, "input": "image", "pretrained": result.pretrained} if image_folder else {}),
        "image": image,
        "labels": version.meta["labels"],
        "class_names": version.meta["class_names"],
        "label_column": version.meta["label_column"],
        "pixel_columns": [] if image_folder else [f"pixel{i}" for i in range(1, image["height"] * image["width"] * image["channels"] + 1)],
        "inference_precision": "auto",
        "dataset": version.name,
        "dataset_version": version.id,
    }
    torch.save({"state_dict": result.model.state_dict(), "model_config": model_config}, model_path)
    return {
        "model_path": str(model_path), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
        "train_seconds": result.train_seconds, "loop_seconds": result.loop_seconds, "device": result.device, "precision": result.precision,
        "planned_epochs": planned_epochs, "stop_reason": result.stop_reason,
        "history": result.history,
    }


def load_trained(model_path: str, for_inference: bool = False):
    """The model and its config saved by train_stage (as served, when `for_inference`)."""
    from keel.models.networks import build_model, inference_model

    saved = torch.load(model_path, map_location="cpu", weights_only=False)
    config = saved["model_config"]
    image = config["image"]
    model = build_model(config["architecture"], image["channels"], image["height"], image["width"], len(config["labels"]),
                        **config.get("build", {}))
    model.load_state_dict(saved["state_dict"])
    if for_inference:
        model = inference_model(model)
    return model.to(memory_format=torch.channels_last).eval(), config


def evaluate_stage(run_id: str, version_dir: str, model_path: str) -> dict:
    """Scores the evaluation split (and test files, if any); logs metrics and confusion matrices."""
    from mlflow.entities import Metric

    from keel.training.evaluate import classification_metrics
    from keel.core.plots import confusion_matrix_png
    from keel.training.train import load_split, predict_logits, select_device, select_precision

    version = DatasetVersion(Path(version_dir))
    model, config = load_trained(model_path, for_inference=True)  # scored exactly as it will be served
    device = select_device("auto")
    precision = select_precision(config["inference_precision"], device)
    model = model.to(device)
    client = tracking.client()
    out = {}
    for part in ("evaluation", "test"):
        indices = version.indices(part)
        if not len(indices):
            continue
        split = load_split(version, indices, device)
        probabilities = torch.softmax(predict_logits(model, split.images, device, precision), dim=1).cpu().numpy()
        predictions = probabilities.argmax(1)
        metrics = classification_metrics(split.targets.cpu().numpy(), predictions, config["class_names"])
        now = int(time.time() * 1000)
        logged = [Metric(f"{part}_accuracy", metrics["accuracy"], now, 0), Metric(f"{part}_macro_f1", metrics["macro_f1"], now, 0)]
        for row in metrics["per_class"]:
            logged += [Metric(f"{part}_precision_{row['class']}", row["precision"], now, 0),
                       Metric(f"{part}_recall_{row['class']}", row["recall"], now, 0)]
        client.log_batch(run_id, metrics=logged)
        folder = settings.reports_dir() / "runs" / run_id
        png = confusion_matrix_png(np.array(metrics["confusion_matrix"]), config["class_names"],
                                   folder / f"{part}_confusion_matrix.png", title=f"{part} split: confusion matrix")
        client.log_artifact(run_id, str(png), artifact_path="evaluation")
        grid = _worst_classified(split, probabilities, config["class_names"], folder / f"{part}_worst_classified.png")
        client.log_artifact(run_id, str(grid), artifact_path="evaluation")
        # Per-row predicted class indices (rows in sorted-index order): the gate's paired test needs them.
        folder.mkdir(parents=True, exist_ok=True)
        predictions_npy = folder / f"{part}_predictions.npy"
        np.save(predictions_npy, predictions.astype(np.int32))
        client.log_artifact(run_id, str(predictions_npy), artifact_path="evaluation")
        client.log_dict(run_id, metrics, f"evaluation/{part}_metrics.json")
        metrics["confusion_matrix_png"] = str(png)
        metrics["worst_classified_png"] = str(grid)
        metrics["predictions_path"] = str(predictions_npy)
        out[part] = metrics
    return out


def _worst_classified(split, probabilities: np.ndarray, class_names: list[str], path: Path, n: int = 12) -> Path:
    """A grid of the `n` images whose true class got the lowest probability."""
    from keel.core.plots import worst_classified_grid

    targets = split.targets.cpu().numpy()
    worst = np.argsort(probabilities[np.arange(len(targets)), targets])[:n]
    images = split.images[torch.from_numpy(worst)].permute(0, 2, 3, 1).cpu().numpy()
    names = np.asarray(class_names)
    return worst_classified_grid(images, list(names[targets[worst]]), list(names[probabilities[worst].argmax(1)]),
                                 list(probabilities[worst].max(1)), path)


def register_stage(run_id: str, version_dir: str, model_path: str, metrics: dict, model_name: str | None = None) -> dict:
    """Logs the pyfunc model, registers a version with tags, makes it the challenger, closes the run."""
    from keel.tracking.promotion import CHALLENGER, current_version, move_alias
    from keel.tracking.registry import log_pixel_classifier, register

    version = DatasetVersion(Path(version_dir))
    name = model_name or f"keel-{version.name}"
    client = tracking.client()
    done = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if done:  # a retry after the version was registered: nothing to do twice but close the run
        mv = done[0]
        _close_run(client, run_id, Path(model_path).parent)
        return {"name": name, "version": str(mv.version), "model_uri": f"models:/{name}/{mv.version}",
                "run_id": run_id, "tags": dict(mv.tags)}
    model, config = load_trained(model_path)
    rows = np.sort(version.indices("evaluation")[:2])
    import pandas as pd

    if config.get("input") == "image":
        example = pd.DataFrame({"path": example_paths(version, rows)})
    else:
        pixels = np.asarray(version.images()[rows]).reshape(len(rows), -1)
        example = pd.DataFrame(pixels.astype(np.int64), columns=config["pixel_columns"])
    model_uri = log_pixel_classifier(run_id, model, config, example)
    evaluation = metrics.get("evaluation", {})
    tags = {
        "dataset": version.name,
        "dataset_version": version.id,
        "evaluation_ids_sha256": version.meta.get("evaluation_ids_sha256") or "",
        "evaluation_accuracy": f"{evaluation.get('accuracy', float('nan')):.6f}",
        "evaluation_macro_f1": f"{evaluation.get('macro_f1', float('nan')):.6f}",
        "architecture": config["architecture"],
        "git_commit": tracking.git_commit(),
        **{k.removeprefix("keel."): v for k, v in split_tags(version).items()},
    }
    number = register(client, model_uri, name, run_id, tags,
                      description=f"{config['architecture']} on {version.name} {version.id}")
    move_alias(client, name, CHALLENGER, number, current_version(client, name, CHALLENGER),
               "registered", f"new version from run {run_id}")
    _close_run(client, run_id, Path(model_path).parent)
    return {"name": name, "version": number, "model_uri": f"models:/{name}/{number}", "run_id": run_id, "tags": tags}


def _close_run(client, run_id: str, folder: Path) -> None:
    """Marks the run finished, removes its resume state (no longer needed) and releases its run
    key's lock: an identical training waiting for it now starts a run of its own."""
    client.set_terminated(run_id, "FINISHED")
    shutil.rmtree(folder, ignore_errors=True)
    release_run_lock(folder)


def example_paths(version: DatasetVersion, rows: np.ndarray) -> list[str]:
    """The photo files of stored rows `rows` of an image-folder version."""
    profile = version.profile()
    stored = profile[profile["status"] == "ok"].reset_index(drop=True)
    root = version.meta["sources"][0]["path"]
    return [f"{root.rstrip('/')}/{stored['file'][int(r)]}" for r in rows]


def score_registered_on_split(model_uri: str, version_dir: str, part: str = "evaluation") -> dict:
    """classification_metrics of a registered model on a split of a dataset version, plus
    `predictions`: the per-row predicted class indices (a list, rows in sorted-index order)."""
    from keel.training.evaluate import classification_metrics
    from keel.tracking.registry import load_registered
    from keel.training.train import load_split, predict_logits

    version = DatasetVersion(Path(version_dir))
    classifier = load_registered(model_uri)
    if classifier.config["class_names"] != version.meta["class_names"]:
        raise ValueError(f"{model_uri} predicts classes {classifier.config['class_names']}, "
                         f"not the dataset's {version.meta['class_names']}")
    split = load_split(version, version.indices(part), classifier.device)
    logits = predict_logits(classifier.model, split.images, classifier.device, classifier.precision)
    predictions = logits.argmax(1).cpu().numpy()
    metrics = classification_metrics(split.targets.cpu().numpy(), predictions, version.meta["class_names"])
    return metrics | {"predictions": predictions.tolist()}


def promote_stage(version_dir: str, name: str, version: str, metrics: dict, policy, attempts: int = 3) -> dict:
    """The gate: scores the current champion on this run's evaluation split, compares the two row
    by row (McNemar's test and a paired bootstrap interval, keel.tracking.promotion.decide), and moves
    `champion` to `version` (compare-and-set) when the challenger wins. Returns the verdict."""
    from keel.data.datasets import class_indices
    from keel.tracking.promotion import CHAMPION, AliasConflict, current_version, decide, move_alias

    client = tracking.client()
    dataset = DatasetVersion(Path(version_dir))
    challenger = metrics["evaluation"]
    split = dataset.split_description or None
    targets = challenger_correct = None
    for _ in range(attempts):
        champion_version = current_version(client, name, CHAMPION)
        champion = champion_correct = None
        if champion_version is not None and champion_version != str(version):
            try:
                champion = score_registered_on_split(f"models:/{name}/{champion_version}", version_dir)
            except ValueError as exc:
                verdict = decide(challenger, None, policy, str(version), None, split=split)
                verdict.promote = False
                verdict.reasons.append(f"champion v{champion_version} cannot be compared: {exc}")
                break
            if targets is None:  # true classes of the evaluation rows, in the sorted order both were scored in
                targets = class_indices(dataset.labels()[np.sort(dataset.indices("evaluation"))], dataset.meta["labels"])
                path = challenger.get("predictions_path")
                predictions = np.load(path) if path and Path(path).exists() else None
                if predictions is None or len(predictions) != len(targets):  # e.g. a retry on another machine
                    predictions = score_registered_on_split(f"models:/{name}/{version}", version_dir)["predictions"]
                challenger_correct = np.asarray(predictions) == targets
            champion_correct = np.asarray(champion.pop("predictions")) == targets
        verdict = decide(challenger, champion, policy, str(version), champion_version,
                         challenger_correct, champion_correct, split=split)
        verdict.evaluation_ids_sha256 = dataset.meta.get("evaluation_ids_sha256")
        if not verdict.promote:
            break
        try:
            move_alias(client, name, CHAMPION, str(version), champion_version, "gate", verdict.text())
            break
        except AliasConflict:
            continue  # another promotion won the race: decide again against the new champion
    else:
        verdict.promote = False
        verdict.reasons.append(f"the champion kept moving; gave up after {attempts} attempts")
    client.set_model_version_tag(name, str(version), "keel.verdict", verdict.text())
    client.set_model_version_tag(name, str(version), "keel.promoted", str(verdict.promote).lower())
    if verdict.p_value is not None:  # compared with a champion on the same rows
        client.set_model_version_tag(name, str(version), "keel.gate.p_value", f"{verdict.p_value:.6g}")
        client.set_model_version_tag(name, str(version), "keel.gate.difference", f"{verdict.difference:+.6f}")
        client.set_model_version_tag(name, str(version), "keel.gate.ci",
                                     f"{verdict.ci_low:+.6f}..{verdict.ci_high:+.6f} ({policy.confidence * 100:g} %)")
    return verdict.to_dict() | {"text": verdict.text(), "name": name, "version": str(version)}


# --------------------------------------------------------------------------- incoming data


def default_suite_path(dataset_config: str) -> Path:
    """Where the config's suite lives: its `expectations:` path, else conf/expectations/<name>.json."""
    from keel.validation.suite import suite_path

    config = load_dataset_config(dataset_config)
    return suite_path(config) or Path(dataset_config).resolve().parent.parent / "expectations" / f"{config.name}.json"


def profile_stage(dataset_config: str, version_dir: str, out: str | None = None, epochs: int = 5) -> dict:
    """Infers the suite from the version, writes it (and the autoencoder), and registers the
    autoencoder in MLflow as `keel-<dataset>-autoencoder`, tagged with the suite's sha256."""
    import hashlib

    import pandas as pd
    from mlflow.entities import Metric, Param

    from keel.validation.profiling import profile_reference
    from keel.tracking.registry import log_anomaly_scorer, register
    from keel.validation.suite import write_suite

    config = load_dataset_config(dataset_config)
    version = DatasetVersion(Path(version_dir))
    target = Path(out) if out else default_suite_path(dataset_config)
    profiled = profile_reference(config, version, target, epochs=epochs)
    doc, trained = profiled["suite"], profiled["trained"]

    client = tracking.client()
    experiment = tracking.experiment_id(client, f"keel-{config.name}-profiles")
    run = client.create_run(experiment, run_name=f"profile-{version.id[:8]}", tags={
        "keel.dataset": config.name, "keel.dataset_version": version.id, "keel.git_commit": tracking.git_commit(),
        "mlflow.source.name": "keel validate profile"})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    params = {"epochs": epochs, "percentile": doc["anomaly"]["percentile"], "margin": doc["anomaly"]["margin"],
              **{f"autoencoder.{k}": v for k, v in doc["anomaly"]["architecture"].items()}}
    metrics = [Metric(k, float(v), now, row["epoch"]) for row in trained.history for k, v in row.items() if k != "epoch"]
    metrics += [Metric(k, float(v), now, 0) for k, v in profiled["behaviour"].items()]
    metrics += [Metric("anomaly_threshold", profiled["threshold"], now, 0), Metric("train_seconds", trained.seconds, now, 0)]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    _log_dataset_input(client, run_id, version)
    rows = np.sort(version.indices("evaluation")[:2])
    example = pd.DataFrame(np.asarray(version.images()[rows]).reshape(len(rows), -1).astype(np.int64), columns=config.pixel_columns)
    model_uri = log_anomaly_scorer(run_id, Path(profiled["weights_path"]),
                                   {"threshold": profiled["threshold"], "pixel_columns": config.pixel_columns}, example)
    name = f"keel-{config.name}-autoencoder"
    number = register(client, model_uri, name, run_id, {
        "dataset": config.name, "dataset_version": version.id, "threshold": f"{profiled['threshold']:.6g}",
        "weights_sha256": doc["anomaly"]["sha256"]}, description=f"anomaly scorer of the {config.name} suite",
        model_description="Keel anomaly scorer (autoencoder) kept with an expectation suite")
    doc["anomaly"]["model_uri"] = f"models:/{name}/{number}"
    write_suite(doc, target)
    client.log_artifact(run_id, str(target), artifact_path="suite")
    client.set_model_version_tag(name, number, "suite_sha256", hashlib.sha256(target.read_bytes()).hexdigest())
    client.set_terminated(run_id, "FINISHED")
    return {"suite_path": str(target), "weights_path": profiled["weights_path"], "model_uri": doc["anomaly"]["model_uri"],
            "run_id": run_id, "threshold": profiled["threshold"], "behaviour": profiled["behaviour"],
            "expectations": sum(len(v) for v in doc["suites"].values()), "seconds": profiled["seconds"]}


def validate_incoming_stage(dataset_config: str, input_path: str, report_dir: str | None = None,
                            labels_path: str | None = None, id_column: str = "id"):
    """Validates one landed file with the dataset's suite; returns the BatchResult."""
    from keel.validation.incoming import validate_batch

    config = load_dataset_config(dataset_config)
    return validate_batch(config, input_path, report_dir, labels_path, id_column)


def pending_stage(dataset_config: str, input_path: str) -> list[str]:
    """The landed files to validate: the file itself, or a folder's files without a report."""
    from keel.data.landing import pending_files

    return pending_files(load_dataset_config(dataset_config), input_path)


def curate_stage(dataset_config: str, report_dir: str) -> dict:
    """Adds an accepted batch to the curated training data; returns the new dataset version."""
    from keel.validation.incoming import curate_batch

    return curate_batch(load_dataset_config(dataset_config), report_dir)
