"""The whole training flow on small real subsets of Sign-MNIST, through Prefect."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from cli.train import summary
from flows.training import training_flow
from keel.tracking import client as tracking
from keel.core.config import TrainConfig
from keel.core.errors import DataValidationError
from keel.tracking.promotion import PromotionPolicy, current_version, history
from tests.bad_data import CASES
from tests.conftest import REPO, stratified_rows, write_dataset_config

ONE_EPOCH = TrainConfig(epochs=1, batch_size=64)


def _artifact_keys():
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key for a in client.read_artifacts()}


def test_flow_trains_evaluates_registers_and_promotes(keel_home, small_config, small_rows):
    any_accuracy = PromotionPolicy(floor=0.0)
    result = training_flow(dataset_config=str(small_config), train=ONE_EPOCH, promotion=any_accuracy)
    registered = result.registered
    assert registered.name == "keel-sign-mnist-small" and registered.version == "1"
    assert result.verdict.promote and "no champion yet" in result.verdict.text()
    assert result.trained.epochs_run == 1 and Path(result.trained.model_path).parent == Path(result.run.checkpoint_dir)
    evaluation = result.metrics["evaluation"]
    confusion = np.array(evaluation["confusion_matrix"])
    assert evaluation["rows"] == confusion.sum() == len(np.load(result.version.path / "evaluation_idx.npy"))
    assert evaluation["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert result.validation["success"] and Path(result.validation["docs_index"]).exists()
    # Every number names its split: the run, the model version, the verdict and the summary.
    split = result.version.split
    assert split.startswith(f"group-aware split: {evaluation['rows']:,} evaluation rows in ")
    assert split in result.verdict.text() and split in summary(result, 1.0)
    assert "1-nearest-neighbour lookup" in summary(result, 1.0)

    client = tracking.client()
    run = client.get_run(registered.run_id)
    assert run.info.status == "FINISHED"
    assert {"evaluation_accuracy", "evaluation_macro_f1", "val_accuracy", "train_loss",
            "baseline_1nn_evaluation_accuracy", "evaluation_near_copy_share"} <= set(run.data.metrics)
    assert run.data.tags["keel.split"] == split and run.data.tags["keel.split.kind"] == "group-aware"
    version_tags = client.get_model_version("keel-sign-mnist-small", "1").tags
    assert version_tags["split.kind"] == "group-aware" and version_tags["split.threshold"] == "0.97"
    assert int(version_tags["split.groups"]) > 0 and version_tags["split.evaluation_rows"] == str(evaluation["rows"])
    artifacts = {a.path for d in ("augmentation", "training", "evaluation") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"augmentation/augmentation_grid.png", "training/learning_curves.png",
            "evaluation/evaluation_confusion_matrix.png"} <= artifacts
    model = mlflow.pyfunc.load_model("models:/keel-sign-mnist-small@challenger")
    assert len(model.predict(small_rows.head(5))) == 5
    assert {"data-validation", "data-docs", "evaluation-metrics", "evaluation-per-class", "registered-model",
            "promotion-verdict"} <= _artifact_keys()

    # The same data, config and seed give the same model: no evidence that it beats the champion.
    again = training_flow(dataset_config=str(small_config), train=ONE_EPOCH, promotion=any_accuracy)
    assert again.version.reused and again.registered.version == "2"
    assert not again.verdict.promote and "no evidence of improvement: " in again.verdict.text()
    assert "(+0.0000, 95 % CI +0.0000..+0.0000, McNemar p = 1.000)" in again.verdict.text()
    assert current_version(client, "keel-sign-mnist-small", "champion") == "1"
    assert current_version(client, "keel-sign-mnist-small", "challenger") == "2"
    assert client.get_model_version("keel-sign-mnist-small", "2").tags["keel.verdict"] == again.verdict.text()
    assert [(e["alias"], e["to"]) for e in history(client, "keel-sign-mnist-small")] == [
        ("challenger", "1"), ("champion", "1"), ("challenger", "2")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_flow_stops_on_bad_data_before_training(keel_home, tmp_path, small_rows, case):
    writer, rule, example = CASES[case]
    csv = tmp_path / f"{case}.csv"
    writer(small_rows, csv)
    config = write_dataset_config(tmp_path, csv, name=case)
    with pytest.raises(DataValidationError) as caught:
        training_flow(dataset_config=str(config), train=ONE_EPOCH)
    report = caught.value.report
    assert rule in report.summary() and example in report.summary()
    assert Path(report.docs_index).exists()
    client = tracking.client()
    assert client.search_registered_models() == []
    experiment = client.get_experiment_by_name(f"keel-{case}")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []


def test_killed_run_resumes_where_it_stopped(keel_home, tmp_path, sign_mnist_rows):
    """Kill the flow's process after its first epoch checkpoint; the next run resumes from it."""
    rows = stratified_rows(sign_mnist_rows, 120)  # 2,880 rows: epochs long enough to kill between
    csv = tmp_path / "resume.csv"
    rows.to_csv(csv, index=False)
    config = write_dataset_config(tmp_path, csv, name="resume")
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "KEEL_HOME": str(keel_home), "PREFECT_API_URL": PREFECT_API_URL.value() or ""}
    # No time budget: on a busy machine it would plan fewer than the 6 epochs this run must finish.
    args = [sys.executable, "-m", "cli.main", "train", "--dataset-config", str(config), "--epochs", "6", "--batch-size", "64",
            "--time-budget", "0"]
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        checkpoints = keel_home / "data" / "checkpoints" / "resume"
        while not list(checkpoints.glob("*/last.pt")):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stderr.close()

    result = training_flow(dataset_config=str(config), train=TrainConfig(epochs=6, batch_size=64, time_budget=0),
                           promotion=PromotionPolicy(floor=0.0))
    trained = result.trained
    assert result.run.resumed and 1 <= trained.resumed_from_epoch < 6
    assert trained.epochs_run == 6 or trained.stopped_early
    run_id = result.registered.run_id
    client = tracking.client()
    assert client.get_run(run_id).data.tags["keel.resumed"] == "true"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "val_accuracy"))
    assert steps == list(range(1, trained.epochs_run + 1))  # each epoch logged once, in one run


# A `keel train` process that imports everything first, then waits until files matching a
# glob exist before it runs the command: it starts with the other one, and its flow reaches
# the run while the first one trains in it.
_GATED_TRAIN = """
import sys, time
from pathlib import Path
import great_expectations, torch  # noqa: F401
import flows.training  # noqa: F401
from cli.main import entry
root, pattern = Path(sys.argv[1]), sys.argv[2]
while not list(root.glob(pattern)):
    time.sleep(0.02)
sys.argv = ["keel", "train", *sys.argv[3:]]
entry()
"""


def test_identical_trainings_started_together_get_two_runs(keel_home, tmp_path, small_rows):
    """Two identical `keel train` started at once: the second waits for the first, says so, and
    then trains in a run of its own (the first's finished run is not resumed)."""
    csv = tmp_path / "twins.csv"
    small_rows.to_csv(csv, index=False)
    config = write_dataset_config(tmp_path, csv, name="twins")
    from prefect.settings import PREFECT_API_URL

    # One torch thread each: two trainings at once on a small machine.
    env = {**os.environ, "KEEL_HOME": str(keel_home), "PREFECT_API_URL": PREFECT_API_URL.value() or "",
           "OMP_NUM_THREADS": "1"}
    options = ["--dataset-config", str(config), "--time-budget", "0", "--epochs", "2", "--batch-size", "64", "--floor", "0"]
    checkpoints = keel_home / "data" / "checkpoints"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    commands = [[sys.executable, "-m", "cli.main", "train", *options],
                # Released as soon as the first has opened its MLflow run.
                [sys.executable, "-c", _GATED_TRAIN, str(checkpoints), "twins/*/run.json", *options]]
    processes = []
    try:
        for command, log in zip(commands, logs):
            with open(log, "wb") as out:
                processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 300  # ~40 s on an idle 2-core machine; a guard against a hang
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)

    client = tracking.client()
    runs = client.search_runs([client.get_experiment_by_name("keel-twins").experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert "keel.resumed" not in run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(1, len(steps) + 1)) and steps  # each epoch once
    versions = client.search_model_versions("name='keel-twins'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)
    assert f"another identical training (pid {processes[0].pid}) is running; waiting for it to finish" in outputs[1]
