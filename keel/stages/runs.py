"""Tracking runs of a training: the experiment, the run (new or resumed), its lock and its end.

A training's run key is the checkpoint folder of (train config, dataset version): one process
at a time trains a key (hold_run_lock), and an interrupted run of the same key is resumed.
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

from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from keel.core import settings
from keel.core.config import DatasetConfig, TrainConfig, load_dataset_config
from keel.core.contracts import RunRef, VersionRef
from keel.core.secrets import redact
from keel.data.versions import DatasetVersion
from keel.stages.ingest import split_tags, stored
from keel.tracking import client as tracking
from keel.training.checkpoint import config_key
from keel.validation.checks import leakage_sentences


def checkpoint_dir(dataset: str, version: str, train_config: TrainConfig) -> Path:
    return settings.checkpoints_dir() / dataset / config_key(train_config, version)


# Run keys (checkpoint folders) whose training lock this process holds: path -> descriptor;
# and per key, the thread lock a thread of this process holds while it takes that lock.
_run_locks: dict[str, int] = {}
_taking: dict[str, threading.Lock] = {}
_run_locks_guard = threading.Lock()


def _lock_path(folder: Path) -> Path:
    return Path(folder).with_name(Path(folder).name + ".lock")


def hold_run_lock(folder: Path, on_wait: Callable[[str], None] | None = None) -> None:
    """Takes the exclusive lock of the run key `folder` (an flock on `<folder>.lock` beside it),
    held until release_run_lock or the process ends; a kill -9 releases it too.

    Another process training the same key holds it from finding its run until the run is
    registered: then `on_wait` gets one line saying so and this call waits for it. Re-entrant
    per process (a retried task holds it already)."""
    path = _lock_path(folder)
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
    with _run_locks_guard:
        descriptor = _run_locks.pop(str(_lock_path(folder)), None)
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


def start_run_stage(dataset_config: str, version: VersionRef, train_config: TrainConfig, fresh: bool = False,
                    on_wait: Callable[[str], None] | None = None) -> RunRef:
    """An MLflow run for this training: the unfinished one of an interrupted identical run, else a new one.

    Takes the run key's lock first (hold_run_lock; register_stage releases it): an identical
    training that is running makes this one wait for it (`on_wait` hears it) and then train in
    a new run, since the finished run and its checkpoint are gone; one that was killed is resumed."""
    config = load_dataset_config(dataset_config)
    dataset = stored(version)
    folder = checkpoint_dir(config.name, dataset.id, train_config)
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
            return RunRef(run_id=run_id, experiment_id=experiment, checkpoint_dir=str(folder), resumed=True)
        shutil.rmtree(folder)  # a finished run's leftovers: start over
    run_id = _new_run(client, experiment, config, dataset, train_config)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": run_id}))
    return RunRef(run_id=run_id, experiment_id=experiment, checkpoint_dir=str(folder), resumed=False)


def _new_run(client, experiment: str, config: DatasetConfig, version: DatasetVersion, train_config: TrainConfig) -> str:
    """A new run with the training's parameters, the split's tags, the leakage baselines and
    the dataset version as its input; returns its id."""
    run = client.create_run(experiment, run_name=run_name(config.name, version.id, train_config), tags={
        "keel.dataset": config.name, "keel.dataset_version": version.id,
        "keel.git_commit": tracking.git_commit(), "mlflow.source.name": "keel train",
        "mlflow.note.content": _run_note(config.name, version, train_config),
    })
    run_id = run.info.run_id
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
    log_dataset_input(client, run_id, version)
    return run_id


def run_name(dataset: str, version_id: str, train_config: TrainConfig) -> str:
    """What ran, in the run list's words: "sign-mnist-cnn sign-mnist@8802cd9a seed 42". Runs of the
    same data differ by architecture and seed, so both are in the name."""
    return f"{dataset}-{train_config.model} {dataset}@{version_id[:8]} seed {train_config.seed}"


def _run_note(dataset: str, version: DatasetVersion, train_config: TrainConfig) -> str:
    """The run's description on its MLflow page (markdown): what was trained on which rows."""
    lines = [f"`keel train`: **{train_config.model}** on dataset **{dataset}** version `{version.id}`, "
             f"seed {train_config.seed}, at most {train_config.epochs} epochs."]
    if version.split_description:
        lines.append(f"Evaluated on the {version.split_description.rstrip('.')}.")
    if train_config.backbone:
        lines.append(f"Backbone: `{train_config.backbone}`.")
    return redact("\n\n".join(lines))


def _run_or_none(client, run_id: str):
    """The run, or None when the store does not know it. Any other error (the tracking server
    is down) propagates: the checkpoint must not be thrown away because of an outage."""
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _params(train_config: TrainConfig, dataset: str, version: str) -> list[Param]:
    flat = {"dataset": dataset, "dataset_version": version}
    for key, value in train_config.model_dump().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return [Param(k, redact(str(v))) for k, v in flat.items()]  # e.g. --weights may be a URL


def log_dataset_input(client, run_id: str, version: DatasetVersion) -> None:
    """Records the dataset version as the run's MLflow dataset input (digest = version id)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow registers the local source twice and says so
        source = resolve_dataset_source(version.path.as_uri())
    dataset = MetaDataset(source=source, name=version.name, digest=version.id)
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                     tags=[InputTag("mlflow.data.context", "training")])])


def close_run(client, run: RunRef) -> None:
    """Marks the run finished, removes its resume state (no longer needed) and releases its run
    key's lock: an identical training waiting for it now starts a run of its own."""
    folder = Path(run.checkpoint_dir)
    client.set_terminated(run.run_id, "FINISHED")
    shutil.rmtree(folder, ignore_errors=True)
    release_run_lock(folder)


def kill_run(run: RunRef) -> None:
    """Marks a run that a signal stopped (SIGTERM, Ctrl-C) KILLED, at once: one try, 5 s at
    most against a tracking server, since the process is shutting down. Its checkpoint and
    lock stay as they are: the next identical training resumes this run (start_run_stage
    reopens a run that is not FINISHED), and the lock ends with the process."""
    bounded = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    saved = {name: os.environ.get(name) for name in bounded}
    os.environ.update(bounded)
    try:
        tracking.client().set_terminated(run.run_id, "KILLED")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
