"""Keel against a real MLflow tracking server (not the embedded SQLite store), on loopback."""


import mlflow
import pytest

from ops.credentials import check_mlflow_credentials
from flows.prefect_api import free_port
from ops.processes import spawn, stop, wait_healthy
from ops.stack import Stack, StackSettings
from keel.stages.evaluation import evaluate_stage
from keel.stages.ingest import ingest_stage
from keel.stages.registration import promote_stage, register_stage
from keel.stages.runs import start_run_stage
from keel.stages.training import train_stage
from keel.tracking import client as tracking
from keel.core.config import TrainConfig
from keel.core.errors import KeelError
from keel.tracking.promotion import PromotionPolicy, current_version
from tests import servers


@pytest.fixture
def mlflow_server(tmp_path):
    with servers.mlflow_server(tmp_path / "server") as (url, artifacts):
        yield url, artifacts


def test_training_stages_register_and_promote_on_a_tracking_server(mlflow_server, keel_home, small_config,
                                                                  small_rows, monkeypatch):
    url, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    assert not tracking.embedded() and tracking.tracking_uri() == url
    config = str(small_config)
    version = ingest_stage(config)
    train = TrainConfig(epochs=1, batch_size=64)
    run = start_run_stage(config, version, train)
    trained = train_stage(run, version, train, progress=False)
    metrics = evaluate_stage(run, version, trained)
    registered = register_stage(run, version, trained, metrics)
    verdict = promote_stage(version, registered, metrics, PromotionPolicy(floor=0.0))
    assert verdict.promote
    client = tracking.client()
    assert current_version(client, registered.name, "champion") == registered.version
    predictions = mlflow.pyfunc.load_model(f"models:/{registered.name}@champion").predict(small_rows.head(3))
    assert len(predictions) == 3
    # Keel's own loader: every file, downloaded through the server's artifact proxy, matches the manifest.
    from keel.serving.pyfunc import load_verified_model

    verified = load_verified_model(f"models:/{registered.name}@champion").predict(None, small_rows.head(3))
    assert verified["label"].tolist() == predictions["label"].tolist()
    assert not (keel_home / "mlruns").exists()  # nothing went to the embedded store
    assert any(artifacts.rglob("MLmodel"))  # the server stored the model's artifacts


def test_the_stacks_mlflow_server_requires_its_credentials(tmp_path, monkeypatch):
    """The MLflow server `keel stack up` starts (basic-auth app, SQLite here: no PostgreSQL
    needed) refuses anonymous requests, accepts the stack's credentials through the MLflow
    client's own variables, and names the fix when credentials.env no longer matches its users."""
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
    stack = Stack(StackSettings(stack_dir=tmp_path / "stack", postgres="sqlite"))
    port = free_port()
    stack.mlflow_url = f"http://127.0.0.1:{port}"
    server = stack._mlflow_server(f"sqlite:///{tmp_path / 'stack' / 'mlflow.db'}", port)
    spawn(server)
    try:
        wait_healthy(server, timeout=180)
        credentials = stack.credentials()
        check_mlflow_credentials(stack.mlflow_url, credentials, stack.credentials_file, tmp_path / "stack" / "mlflow-auth.db")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
        # The URI passed explicitly: an earlier test may have set mlflow's process-wide tracking URI.
        with pytest.raises(mlflow.exceptions.MlflowException, match="401|authenticated|Unauthorized"):
            mlflow.MlflowClient(tracking_uri=stack.mlflow_url).search_experiments()
        for key, value in credentials.items():
            monkeypatch.setenv(key, value)
        client = mlflow.MlflowClient(tracking_uri=stack.mlflow_url)
        experiment = client.create_experiment("signed-in")
        assert client.get_experiment(experiment).name == "signed-in"
        # credentials.env replaced (lost, regenerated): the server's users do not know them.
        stack.credentials_file.rename(tmp_path / "old-credentials.env")
        with pytest.raises(KeelError, match="MLflow refuses the credentials in .*credentials.env: its user database"):
            check_mlflow_credentials(stack.mlflow_url, stack.credentials(), stack.credentials_file,
                                     tmp_path / "stack" / "mlflow-auth.db")
    finally:
        stop(server)
