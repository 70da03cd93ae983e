"""The `keel` command as a process: what it leaves running when it is killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def _server_child(process: subprocess.Popen, timeout: float = 60) -> psutil.Process:
    """The temporary Prefect API server the command spawned (uvicorn serving Prefect's app)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(process.pid).children():
            try:
                if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        if process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail("the keel command never started its temporary Prefect API server")


def test_temporary_prefect_api_dies_with_a_killed_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env["KEEL_HOME"] = str(tmp_path)
    command = [sys.executable, "-m", "cli.main", "predict", "--model", "no-such-model",
               "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out.parquet")]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = _server_child(process)
    try:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        # The server was started with PR_SET_PDEATHSIG: the kernel signals it when its parent dies.
        server.wait(timeout=15)
    except psutil.TimeoutExpired:
        server.kill()
        pytest.fail("the temporary Prefect API server outlived the killed keel command")
    assert not server.is_running()


# --------------------------------------------------------------------------- termination

# A transfer training long enough to be stopped mid-way: phase 2 only (its photos come from a
# DataLoader worker process), hundreds of epochs of a few batches each.
LONG_TRAINING = ["--model", "resnet18", "--image-size", "32", "--head-epochs", "0", "--epochs", "400",
                 "--patience", "400", "--batch-size", "8", "--workers", "1", "--floor", "0"]


def _wait_for(path_glob, root: Path, process: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            return found[0]
        if process.poll() is not None:
            pytest.fail(f"keel train exited ({process.returncode}) before its first checkpoint:\n"
                        + process.stdout.read().decode(errors="replace")[-4000:])
        time.sleep(0.1)
    pytest.fail(f"no {path_glob} under {root} within {timeout:.0f} s")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_terminated_training_stops_at_once_keeps_its_checkpoint_and_is_never_retried(tmp_path, sig, code):
    """SIGTERM (a scheduler cancelling the job, `kill`) or Ctrl-C (SIGINT) sent to the command's
    process group, as a terminal or a batch scheduler does: the DataLoader worker and the
    temporary Prefect API get it too. The command stops within seconds with 128 + the signal's
    number, the last epoch's checkpoint stays for the next run to resume from, the MLflow run
    is marked KILLED and the Prefect flow run Cancelled, and nothing is retried."""
    from mlflow import MlflowClient

    from tests.image_data import fruits_config, small_fruits

    config = fruits_config(tmp_path, small_fruits(tmp_path / "photos"))
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "MLFLOW_TRACKING_"))}
    env["KEEL_HOME"] = str(home)
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # the temporary API's database, read below
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "train", "--dataset-config", str(config), *LONG_TRAINING],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        checkpoint = _wait_for("data/checkpoints/*/*/last.pt", home, process)
        time.sleep(1.0)  # a few more epochs: the signal lands mid-epoch, with the worker busy
        assert process.poll() is None, "the training finished before it could be stopped"
        signalled = time.monotonic()
        os.killpg(process.pid, sig)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("keel train did not stop within 30 s of " + sig.name + ":\n"
                        + process.communicate()[0].decode(errors="replace")[-4000:])
        seconds = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = output.decode(errors="replace")
    assert process.returncode == code, text[-4000:]
    assert seconds < 10, f"took {seconds:.1f} s to stop\n{text[-4000:]}"
    assert "AwaitingRetry" not in text and "Retrying" not in text, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    import torch

    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["epoch"] >= 1  # kept, whole
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [run.info.status for run in runs] == ["KILLED"], text[-4000:]
    # The flow run is marked cancelled (its API outlived the signal), and none of its task runs
    # is left running.
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        states = db.execute("SELECT flow_run.state_type, flow_run_state.message FROM flow_run "
                            "JOIN flow_run_state ON flow_run.state_id = flow_run_state.id").fetchall()
        tasks = {name.rsplit("-", 1)[0]: state for name, state in db.execute("SELECT name, state_type FROM task_run")}
    assert states == [("CANCELLED", f"Stopped by {sig.name}.")], text[-4000:]
    # The task the signal stopped is cancelled with its flow run; those that had finished stay so.
    assert tasks["train"] == "CANCELLED" and tasks["ingest"] == tasks["start-run"] == "COMPLETED", tasks
    assert set(tasks.values()) <= {"COMPLETED", "CANCELLED"}, tasks


@pytest.mark.parametrize("raised, state", [(KeyboardInterrupt, "CANCELLED"), (SystemExit, "CRASHED")])
def test_only_a_stop_signal_turns_a_crashed_flow_run_cancelled(raised, state):
    """The hook every keel command's flow gets (flows.prefect_api.cancel_when_stopped): Ctrl-C
    cancels the flow run and the task run it interrupted; another crash stays a crash."""
    from uuid import uuid4

    from prefect import flow, get_client, task
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.runtime import flow_run as current_flow_run

    from flows.prefect_api import cancel_when_stopped

    runs = []

    @task
    def interrupted():
        time.sleep(0.5)  # running, as the API knows, when the signal comes
        raise raised()

    @flow(name=f"stopped-{uuid4().hex[:8]}")
    def stopped():
        runs.append(current_flow_run.id)
        interrupted()

    with pytest.raises(raised):
        cancel_when_stopped(stopped)()
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)))[0]
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=runs)))
    assert (run.state.type.value, [t.state.type.value for t in tasks]) == (state, [state]), run.state
    if raised is KeyboardInterrupt:
        assert run.state.message == "Stopped by SIGINT."
