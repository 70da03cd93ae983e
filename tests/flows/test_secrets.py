"""Credentials never leave Keel in the open (issue 12): a password planted in a dataset URL and
in MLFLOW_TRACKING_URI is found nowhere afterwards -- not in what the flows print, not in the
Keel home (dataset versions, reports, checkpoints), not in the tracking server's store and
artifacts, and not in Prefect's database (logs, parameters, states, artifacts)."""

from __future__ import annotations

import base64
import http.server
import threading
import time
from pathlib import Path

import pytest

from flows.prefect_api import free_port
from flows.training import training_flow
from keel.core.config import TrainConfig
from keel.core.errors import DatasetError
from keel.tracking.promotion import PromotionPolicy
from tests import servers
from tests.conftest import write_dataset_config

PASSWORD = "PLANTED-PASSWORD-123"
USERINFO = f"user:{PASSWORD}"
# Every form the password could take: plain, and inside a basic-auth header.
FORMS = [PASSWORD.encode(), base64.b64encode(USERINFO.encode())]


@pytest.fixture
def csv_server(tmp_path, small_rows):
    """A loopback HTTP server that serves the 480-row subset as /small.csv to user:PASSWORD only."""
    body = small_rows.to_csv(index=False).encode()
    expected = f"Basic {base64.b64encode(USERINFO.encode()).decode()}"
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="keel"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.split("?")[0] != "/small.csv":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):  # keep the test's output to what Keel prints
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{USERINFO}@127.0.0.1:{server.server_address[1]}/small.csv", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on loopback (no auth of its own: it ignores the header)."""
    with servers.mlflow_server(tmp_path / "mlflow-server") as (url, _):
        yield url.rsplit(":", 1)[1], tmp_path / "mlflow-server"


def _files_holding_password(*folders: Path, since: float = 0.0) -> list[str]:
    found = []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            try:
                if not path.is_file() or path.stat().st_mtime < since:
                    continue
                data = path.read_bytes()
            except OSError:  # vanished meanwhile (a temporary file)
                continue
            if any(form in data for form in FORMS):
                found.append(str(path))
    return found


def _prefect_records() -> dict[str, list[str]]:
    """Everything the test harness's Prefect API kept: logs, flow-run parameters and states,
    task-run states, artifacts -- as text."""
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs are sent in the background: make sure they all arrived
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs()
        task_runs = client.read_task_runs()
        return {
            "logs": [log.message for log in client.read_logs()],
            "flow run parameters": [repr(run.parameters) for run in flow_runs],
            "flow run states": [f"{run.state.message} {run.state.data!r}" for run in flow_runs if run.state],
            "task run states": [f"{run.state.message} {run.state.data!r}" for run in task_runs if run.state],
            "artifacts": [f"{a.key} {a.data} {a.description}" for a in client.read_artifacts()],
        }


def _prefect_database_folder() -> Path:
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url.get_secret_value()
    assert url.startswith("sqlite+aiosqlite:///"), url
    return Path(url.removeprefix("sqlite+aiosqlite:///")).parent


def test_planted_passwords_are_found_nowhere(tmp_path, keel_home, csv_server, mlflow_server, monkeypatch, capfd):
    from prefect import flow

    from tasks.train import prepare_tracking

    started = time.time()
    source, authorizations = csv_server
    mlflow_port, mlflow_folder = mlflow_server
    configs = tmp_path / "configs"  # the user's own files: the only place the password belongs
    configs.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{USERINFO}@127.0.0.1:{mlflow_port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # MLflow prints each run's address (the tracking URI) unless told not to: Keel tells it, whatever this says.
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")

    # 1. The whole training flow reads the dataset over HTTP with basic auth and tracks to a server.
    config = write_dataset_config(configs, source, name="secret-source")
    result = training_flow(dataset_config=str(config), train=TrainConfig(epochs=1, batch_size=64),
                           promotion=PromotionPolicy(floor=0.0))
    assert result.registered.version == "1" and result.verdict.promote
    assert authorizations and set(authorizations) == {f"Basic {FORMS[1].decode()}"}  # the credential did reach the server
    meta = result.version.path / "meta.json"
    assert "http://user:***@127.0.0.1:" in meta.read_text()  # the source is still named, without its password

    # 2. A source whose server refuses the connection: the error names the URL, not the password.
    refused = f"http://{USERINFO}@127.0.0.1:{free_port()}/small.csv"
    with pytest.raises(DatasetError) as error:
        training_flow(dataset_config=str(write_dataset_config(configs, refused, name="secret-refused")),
                      train=TrainConfig(epochs=1, batch_size=64))
    assert "user:***@127.0.0.1" in str(error.value) and PASSWORD not in str(error.value)

    # 3. A tracking server that refuses the connection (no retries: it fails at once).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{USERINFO}@127.0.0.1:{free_port()}")

    @flow(name="secret-tracking")
    def tracking_down(dataset_config: str) -> str:
        return prepare_tracking.with_options(retries=0)(dataset_config)

    with pytest.raises(Exception) as error:
        tracking_down(str(config))
    assert "127.0.0.1" in str(error.value) and PASSWORD not in str(error.value)

    printed = capfd.readouterr()
    assert PASSWORD not in printed.out and PASSWORD not in printed.err
    leaks = {what: [text for text in texts if PASSWORD in text] for what, texts in _prefect_records().items()}
    assert not any(leaks.values()), leaks
    assert _files_holding_password(keel_home, mlflow_folder, _prefect_database_folder()) == []
    from prefect.settings import get_current_settings

    storage = Path(get_current_settings().results.local_storage_path)
    if storage.exists():  # persisted task results, if any were written
        assert _files_holding_password(storage, since=started) == []


def test_flows_refuse_urls_that_carry_credentials(tmp_path):
    """Prefect keeps a flow run's parameters (and an event's payload) in its database, so the
    scoring and validation flows and `keel watch` refuse a URL with a credential in it, naming
    the URL masked and where the credential goes instead."""
    from flows.batch_predict import batch_predict_flow
    from flows.validate_incoming import validate_incoming_flow
    from flows.watch import watch
    from keel.core.errors import ConfigError

    secret = "REFUSED-PW-456"  # not the planted password: Prefect does store these parameters
    url = f"https://user:{secret}@data.example/landing/batch.csv"
    attempts = [
        lambda: batch_predict_flow(model="keel-sign-mnist", input_path=url, output=str(tmp_path / "out.parquet")),
        lambda: batch_predict_flow(model="keel-sign-mnist", input_path=str(tmp_path / "in.csv"),
                                   output=f"s3://bucket/out.parquet?X-Amz-Security-Token={secret}"),
        lambda: validate_incoming_flow(dataset_config="conf/datasets/sign-mnist.yaml", input_path=url),
        lambda: watch(url.rsplit("/", 1)[0], "conf/datasets/sign-mnist.yaml", once=True),
    ]
    for attempt in attempts:
        with pytest.raises(ConfigError) as error:
            attempt()
        assert secret not in str(error.value) and "***" in str(error.value) and "FSSPEC_" in str(error.value)
