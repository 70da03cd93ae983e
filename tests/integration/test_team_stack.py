"""The team stack for real: PostgreSQL databases on 127.0.0.1, a Prefect server and an MLflow
server (served artifacts) on free loopback ports, a process worker per pool, deployments from
prefect.yaml, and the landing watcher, all started by `keel stack` (ops/stack.py) and
stopped by their recorded process ids at the end, even when a test fails.

Both servers require the stack's generated credentials (MLflow's basic-auth app, Prefect's
auth string); the stack's PostgreSQL URL carries a password (trust auth on 127.0.0.1 ignores
it), which must show up in no command line, worker environment, stack.json or log.

PostgreSQL must answer: these tests fail (they do not skip) when it does not.
"""

from __future__ import annotations

import base64
import stat
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops.postgres import drop_database, postgres_reachable
from ops.processes import alive, descendants, kill_hard
from ops.settings import POOLS, SERVER_ONLY_ENV
from ops.stack import Stack, StackSettings
from tests.conftest import stratified_rows, write_dataset_config
from tests.incoming_data import clean_batch

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
# The same server with a password in its URL, as a team configures it (KEEL_STACK_POSTGRES).
DB_PASSWORD = f"pg-{uuid.uuid4().hex}"
POSTGRES_WITH_PASSWORD = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:5432"
TRAINING = "keel-training/weekly-retraining"
SCORING = "keel-batch-predict/daily-scoring"
VALIDATION = "keel-validate-incoming/validate-incoming"
PRETRAINING = "keel-pretraining/text-pretraining"  # on demand: no schedule
CRASH_AFTER = 40  # seconds without a heartbeat (sent every 30 s) before a run is marked crashed


@pytest.fixture(scope="module")
def team(tmp_path_factory, sign_mnist_rows):
    if not postgres_reachable(POSTGRES):
        pytest.fail(f"PostgreSQL does not answer at {POSTGRES}; the team-stack tests need it "
                    "(start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)")
    root = tmp_path_factory.mktemp("team")
    patch = pytest.MonkeyPatch()
    patch.setenv("KEEL_HOME", str(root / "home"))
    patch.setenv("KEEL_STACK_POSTGRES", POSTGRES_WITH_PASSWORD)  # inherited by what `up` starts, unless it scrubs it
    rows = stratified_rows(sign_mnist_rows, 20)
    rows.to_csv(root / "small.csv", index=False)
    config = write_dataset_config(root, root / "small.csv")
    settings = StackSettings.from_env(stack_dir=root / "stack", db_prefix=f"keel_it_{uuid.uuid4().hex[:8]}",
                                      prefect_port=0, mlflow_port=0, heartbeat_seconds=30,
                                      crash_after_seconds=CRASH_AFTER, poll_seconds=1, landing=str(root / "landing"))
    assert settings.postgres == POSTGRES_WITH_PASSWORD
    stack = Stack(settings)
    try:
        stack.up()
        credentials = stack.credentials()
        for key, value in {**stack.client_env(), **credentials}.items():  # MLflow clients read their credentials here
            patch.setenv(key, value)
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url,
                                         PREFECT_API_AUTH_STRING: credentials["PREFECT_API_AUTH_STRING"]}):
            yield {"stack": stack, "root": root, "config": str(config), "rows": rows}
    finally:
        services = list(stack.services)
        stack.down()
        patch.undo()
        for name in (f"{settings.db_prefix}_prefect", f"{settings.db_prefix}_mlflow"):
            drop_database(POSTGRES, name)
        assert not [s.name for s in services if alive(s)], "a process the stack started is still running"


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def run(deployment: str, parameters: dict, wait: bool = True, timeout: float = 300):
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
    return wait_for(flow_run.id, timeout) if wait else flow_run


def wait_for(flow_run_id, timeout: float = 300, until=lambda state: state.is_final()):
    deadline = time.monotonic() + timeout
    with _client() as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and until(flow_run.state):
                return flow_run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {flow_run.name} still {flow_run.state.name} after {timeout:.0f} s")
            time.sleep(0.5)


def train_params(team, model_name: str, epochs: int = 1, batch_size: int = 64) -> dict:
    return {"dataset_config": team["config"], "model_name": model_name,
            "train": {"epochs": epochs, "batch_size": batch_size, "patience": 100, "augment": {"enabled": False}},
            "promotion": {"floor": 0.0}}


def test_stack_runs_on_postgres_with_prefect_yaml_deployed(team):
    stack = team["stack"]
    assert stack.database == "postgresql"
    assert {s.name for s in stack.services} == {"prefect-server", "mlflow-server", "worker-gpu", "worker-cpu", "watcher"}
    with _client() as client:
        assert {p.name: p.concurrency_limit for p in client.read_work_pools()}.items() >= POOLS.items()
        deployments = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
        assert set(deployments) == {TRAINING, SCORING, VALIDATION, PRETRAINING}
        assert deployments[TRAINING].work_pool_name == "gpu"
        assert deployments[SCORING].work_pool_name == deployments[VALIDATION].work_pool_name == "cpu"
        assert deployments[TRAINING].schedules[0].schedule.cron == "0 3 * * 1"
        # Typed parameters: the UI renders TrainConfig and PromotionPolicy as forms.
        schema = deployments[TRAINING].parameter_openapi_schema
        assert schema["definitions"]["TrainConfig"]["properties"]["epochs"]["type"] == "integer"
        assert schema["properties"]["dataset_config"]["type"] == "string"
        assert schema["properties"]["train"]["description"].startswith("Architecture")  # the form's help text
        assert deployments[SCORING].parameter_openapi_schema["properties"]["format"]["enum"] == ["parquet", "csv", "jsonl"]
        for name in (TRAINING, SCORING, VALIDATION):  # the schedules are on: the server's scheduler fills them
            assert not deployments[name].paused and all(s.active for s in deployments[name].schedules)
        automations = {a.name for a in client.read_automations()}
    assert "keel: mark flow runs without heartbeats crashed" in automations
    assert any(name.startswith("keel-validate-incoming/validate-incoming") or "validate-incoming" in name
               for name in automations)  # the deployment trigger on keel.data.landed


def _status(url: str, method: str = "GET", auth: str | None = None, body: bytes | None = None) -> int:
    """The HTTP status of one request, with HTTP basic auth `user:password` when given."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_both_servers_refuse_requests_without_the_stack_credentials(team):
    stack = team["stack"]
    credentials = stack.credentials()
    assert stat.S_IMODE(stack.credentials_file.stat().st_mode) == 0o600
    user, password = credentials["MLFLOW_TRACKING_USERNAME"], credentials["MLFLOW_TRACKING_PASSWORD"]
    search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert _status(search) == 401
    assert _status(search, auth=f"{user}:not-{password}") == 401
    assert _status(search, auth=f"{user}:{password}") == 200
    assert _status(f"{stack.mlflow_url}/health") == 200  # the health probe stays open

    flows = f"{stack.prefect_api_url}/flows/filter"
    assert _status(flows, "POST", body=b"{}") == 401
    assert _status(flows, "POST", auth="keel:wrong", body=b"{}") == 401
    assert _status(flows, "POST", auth=credentials["PREFECT_API_AUTH_STRING"], body=b"{}") == 200
    assert _status(f"{stack.prefect_api_url}/deployments/filter", "POST", body=b"{}") == 401
    assert _status(f"{stack.prefect_api_url}/health") == 200  # Prefect keeps GET /api/health open for probes


def test_training_then_scoring_deployments(team):
    from keel.tracking import client as tracking
    from keel.tracking.promotion import current_version

    # 4 epochs of 16-row batches: a model with clear answers (one epoch of 64 is near-uniform).
    trained = run(TRAINING, train_params(team, "keel-team", epochs=4, batch_size=16))
    assert trained.state.is_completed(), trained.state.message
    assert trained.work_pool_name == "gpu"
    client = tracking.client()
    assert tracking.tracking_uri() == team["stack"].mlflow_url
    assert current_version(client, "keel-team", "champion") == "1"
    version = client.get_model_version("keel-team", "1")
    assert client.get_run(version.run_id).info.status == "FINISHED"

    batch = team["root"] / "scoring" / "batch.csv"
    batch.parent.mkdir()
    team["rows"].head(60).to_csv(batch, index=False)
    out = team["root"] / "predictions" / "{date}" / "scores.parquet"
    scored = run(SCORING, {"model": "keel-team@champion", "input_path": str(batch.parent), "output": str(out)})
    assert scored.state.is_completed(), scored.state.message
    assert scored.work_pool_name == "cpu"
    written = list((team["root"] / "predictions").glob("*/scores.parquet"))
    assert len(written) == 1
    predictions = pd.read_parquet(written[0])
    assert len(predictions) == 60 and set(predictions["model_version"]) == {"1"}
    # The scoring worker used the champion the training worker registered, through the server.
    import mlflow

    expected = mlflow.pyfunc.load_model("models:/keel-team@champion").predict(team["rows"].head(60).drop(columns=["label"]))
    # bf16 on a worker with other thread counts may flip a near-tie: the same model gives the
    # same confidences, and the same class wherever it is not a tie.
    np.testing.assert_allclose(predictions["confidence"], expected["confidence"], atol=0.02)
    probabilities = np.sort(expected.filter(like="prob_").to_numpy(), axis=1)
    clear = (probabilities[:, -1] - probabilities[:, -2]) > 0.05
    assert clear.sum() >= 20, probabilities[:, -2:]
    assert predictions["class_name"][clear].tolist() == expected["class_name"][clear].tolist()


def test_a_landed_file_triggers_validation(team):
    landing = Path(team["stack"].settings.landing)
    landing.mkdir(exist_ok=True)
    staged = landing / ".batch-001.csv.part"
    clean_batch().head(200).to_csv(staged, index=False)
    final = landing / "batch-001.csv"
    staged.rename(final)  # lands whole
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deadline = time.monotonic() + 120
    with _client() as client:
        while True:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["validate-incoming"])))
            runs = [r for r in runs if r.parameters.get("input_path") == str(final)]
            if runs:
                break
            assert time.monotonic() < deadline, "no validation run was triggered by the landed file"
            time.sleep(0.5)
    validated = wait_for(runs[0].id, 180)
    assert validated.state.is_completed(), validated.state.message
    reports = list((Path(team["root"]) / "home" / "reports" / "validation" / "sign-mnist" / "incoming").glob("batch-001-*/report.json"))
    assert len(reports) == 1


def test_training_survives_a_20_second_mlflow_outage(team):
    from keel.tracking import client as tracking

    stack = team["stack"]
    flow_run = run(TRAINING, train_params(team, "keel-outage", epochs=6, batch_size=16), wait=False)
    wait_for(flow_run.id, 120, until=lambda state: state.is_running())
    # Wait until the run has started logging to MLflow, then take the server away for 20 s.
    client = tracking.client()
    deadline = time.monotonic() + 120
    while not client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 "attributes.status = 'RUNNING'"):
        assert time.monotonic() < deadline, "the training run never opened its MLflow run"
        time.sleep(0.2)
    kill_hard(stack.service("mlflow-server"))
    time.sleep(20)
    stack.restart("mlflow-server")
    finished = wait_for(flow_run.id, 300)
    assert finished.state.is_completed(), finished.state.message
    versions = client.search_model_versions("name='keel-outage'")
    assert len(versions) == 1 and client.get_run(versions[0].run_id).info.status == "FINISHED"


def test_a_killed_worker_leaves_a_crashed_run_and_the_next_run_resumes(team):
    from keel.tracking import client as tracking

    stack = team["stack"]
    params = train_params(team, "keel-crash", epochs=12, batch_size=16)
    flow_run = run(TRAINING, params, wait=False)
    checkpoints = Path(team["root"]) / "home" / "data" / "checkpoints"
    before = set(checkpoints.rglob("last.pt")) if checkpoints.exists() else set()
    deadline = time.monotonic() + 180
    while not (set(checkpoints.rglob("last.pt")) - before if checkpoints.exists() else set()):
        assert time.monotonic() < deadline, "training never wrote its first checkpoint"
        time.sleep(0.1)
    kill_hard(stack.service("worker-gpu"))  # the worker and the flow run's process: a machine that died
    crashed = wait_for(flow_run.id, CRASH_AFTER + 90)
    assert crashed.state.is_crashed(), f"{crashed.state.name}: {crashed.state.message}"

    stack.restart("worker-gpu")
    rerun = run(TRAINING, params)
    assert rerun.state.is_completed(), rerun.state.message
    client = tracking.client()
    versions = client.search_model_versions("name='keel-crash'")
    assert len(versions) == 1
    mlflow_run = client.get_run(versions[0].run_id)
    assert mlflow_run.data.tags.get("keel.resumed") == "true"  # the same MLflow run, continued
    epochs = [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "val_accuracy")]
    assert sorted(epochs) == list(range(1, 13))  # each epoch logged once, none trained twice or lost


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_no_secret_in_command_lines_worker_environments_state_or_logs(team):
    """Last: after the runs above, the logs hold all they will. The database password is in no
    process's command line, no client process's environment, stack.json or any log; the
    credentials are in no command line, stack.json or log either."""
    stack = team["stack"]
    credentials = stack.credentials()
    auth_string = credentials["PREFECT_API_AUTH_STRING"]
    secrets = [DB_PASSWORD, credentials["MLFLOW_TRACKING_PASSWORD"], auth_string.partition(":")[2]]
    processes = {s.name: [s.pid, *descendants(s.pid)] for s in stack.services}
    assert len(processes["mlflow-server"]) >= 2  # `mlflow server` and the uvicorn it starts
    for name, pids in processes.items():
        for pid in pids:
            command = _read(Path(f"/proc/{pid}/cmdline")).replace(b"\0", b" ").decode(errors="replace")
            leaked = [i for i, secret in enumerate(secrets) if secret in command]
            assert not leaked, f"{name}: secret #{leaked} on the command line of pid {pid}"
    for name in ("worker-gpu", "worker-cpu", "watcher"):
        main = dict(item.split(b"=", 1) for item in _read(Path(f"/proc/{stack.service(name).pid}/environ")).split(b"\0")
                    if b"=" in item)
        assert main[b"PREFECT_API_AUTH_STRING"].decode() == auth_string, name  # what a client needs...
        assert main[b"MLFLOW_TRACKING_PASSWORD"].decode() == credentials["MLFLOW_TRACKING_PASSWORD"], name
        assert not {n.encode() for n in SERVER_ONLY_ENV} & set(main), name  # ...and nothing of the servers'
        for pid in processes[name]:  # the worker and the flow runs it started
            assert DB_PASSWORD.encode() not in _read(Path(f"/proc/{pid}/environ")), f"{name}: pid {pid}"
    recorded = stack.state_file.read_text()
    assert not [secret for secret in secrets if secret in recorded], "stack.json holds a secret"
    logs = list(stack.settings.stack_dir.rglob("*.log"))
    assert {p.stem for p in logs} >= {"prefect-server", "mlflow-server", "worker-gpu", "worker-cpu", "watcher", "deploy"}
    for log in logs:
        text = log.read_text(errors="replace")
        assert not [i for i, secret in enumerate(secrets) if secret in text], f"{log} holds a secret"
