"""`keel stack` credentials: generated once into a 0600 file and reused; the servers get the
database URL and their secrets through 0600 env files (never a command line), the workers and
the watcher get the client credentials and nothing of the servers', and stack.json and
`describe()` hold no secret. No server is started here (tests/integration starts them)."""

from __future__ import annotations

import configparser
import json
import os
import stat
import subprocess

import pytest

from keel.core.errors import KeelError
from ops.credentials import read_env_file, stack_credentials, write_env_file
from ops.processes import service_environment
from ops.settings import CLIENT_CREDENTIALS, SERVER_ONLY_ENV
from ops.stack import Stack, StackSettings

DB_PASSWORD = "pg-S3cret-4711"
POSTGRES = f"postgresql://keel:{DB_PASSWORD}@127.0.0.1:5432"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def sourced(path) -> dict[str, str]:
    """What a shell gets from `set -a; . FILE`."""
    out = subprocess.run(["bash", "-c", f'set -a; . "{path}"; env -0'], env={"PATH": os.environ["PATH"]},
                         capture_output=True, check=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_credentials_are_generated_once_private_and_reused(tmp_path):
    credentials = stack_credentials(tmp_path)
    path = tmp_path / "credentials.env"
    assert mode(path) == 0o600
    assert set(credentials) == set(CLIENT_CREDENTIALS)
    assert credentials["MLFLOW_TRACKING_USERNAME"] == "keel"
    assert len(credentials["MLFLOW_TRACKING_PASSWORD"]) >= 30
    user, _, secret = credentials["PREFECT_API_AUTH_STRING"].partition(":")
    assert user == "keel" and len(secret) >= 30 and secret != credentials["MLFLOW_TRACKING_PASSWORD"]
    assert stack_credentials(tmp_path) == credentials  # reused, not regenerated
    assert Stack(StackSettings(stack_dir=tmp_path, postgres="sqlite")).credentials() == credentials
    assert {k: v for k, v in sourced(path).items() if k in credentials} == credentials  # docs/team-stack.md's recipe
    assert stack_credentials(tmp_path / "other") != credentials  # another stack, other secrets


def test_a_loose_credentials_file_is_tightened_and_a_broken_one_named(tmp_path):
    credentials = stack_credentials(tmp_path)
    path = tmp_path / "credentials.env"
    path.chmod(0o644)
    assert stack_credentials(tmp_path) == credentials
    assert mode(path) == 0o600
    path.write_text("MLFLOW_TRACKING_USERNAME=keel\n")
    with pytest.raises(KeelError, match="credentials.env has no MLFLOW_TRACKING_PASSWORD, PREFECT_API_AUTH_STRING"):
        stack_credentials(tmp_path)


def test_env_files_quote_what_needs_it_and_refuse_what_cannot_be_quoted(tmp_path):
    values = {"PLAIN": "keel:abc-_9", "URL": "postgresql+asyncpg://u:p%40ss@h:5432/db?ssl=require&x=1",
              "ODD": 'a b $HOME "c" #d'}
    write_env_file(tmp_path / "x.env", values)
    assert mode(tmp_path / "x.env") == 0o600
    assert read_env_file(tmp_path / "x.env") == values
    assert {k: v for k, v in sourced(tmp_path / "x.env").items() if k in values} == values
    with pytest.raises(KeelError, match="QUOTE"):
        write_env_file(tmp_path / "y.env", {"QUOTE": "it's"})
    assert not (tmp_path / "y.env").exists()


@pytest.fixture
def stack(tmp_path, monkeypatch):
    """A stack's services as `up` builds them (not started), with a PostgreSQL password in
    KEEL_STACK_POSTGRES and in another inherited variable."""
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEEL_STACK_POSTGRES", POSTGRES)
    monkeypatch.setenv("SOME_TOOL_DSN", f"host=db password={DB_PASSWORD}")
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", f"{POSTGRES}/elsewhere")
    settings = StackSettings.from_env(stack_dir=tmp_path / "stack")
    assert settings.postgres == POSTGRES
    stack = Stack(settings, database="postgresql", prefect_api_url="http://127.0.0.1:4200/api",
                  mlflow_url="http://127.0.0.1:5000")
    stack.services = [stack._prefect_server(f"postgresql+asyncpg://keel:{DB_PASSWORD}@127.0.0.1:5432/keel_prefect", 4200),
                      stack._mlflow_server(f"postgresql+psycopg2://keel:{DB_PASSWORD}@127.0.0.1:5432/keel_mlflow", 5000),
                      stack._worker("gpu"), stack._worker("cpu"), stack._watcher()]
    for number, service in enumerate(stack.services):
        service.pid, service.start_time = 10_000 + number, 1
    stack._save()
    return stack


def secrets_of(stack) -> list[str]:
    """The database password, the MLflow password and the Prefect auth string (and its secret part)."""
    credentials = stack.credentials()
    auth = credentials["PREFECT_API_AUTH_STRING"]
    return [DB_PASSWORD, credentials["MLFLOW_TRACKING_PASSWORD"], auth, auth.partition(":")[2]]


def test_servers_get_the_database_url_and_their_secrets_from_private_files(stack):
    credentials = stack.credentials()
    prefect, mlflow = stack.service("prefect-server"), stack.service("mlflow-server")
    for service in (prefect, mlflow):
        assert not any(secret in arg for arg in service.argv for secret in secrets_of(stack)), service.argv
        assert service.env_files and all(mode(path) == 0o600 for path in service.env_files)
    env = service_environment(prefect)
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith(f":{DB_PASSWORD}@127.0.0.1:5432/keel_prefect")
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == credentials["PREFECT_API_AUTH_STRING"]

    argv = mlflow.argv
    assert argv[argv.index("--app-name") + 1] == "basic-auth" and "--backend-store-uri" not in argv
    env = service_environment(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith(f":{DB_PASSWORD}@127.0.0.1:5432/keel_mlflow")
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == credentials["MLFLOW_TRACKING_USERNAME"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == credentials["MLFLOW_TRACKING_PASSWORD"]
    key = env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert len(key) >= 32
    auth = configparser.ConfigParser()
    auth.read(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert auth["mlflow"]["database_uri"] == f"sqlite:///{stack.settings.stack_dir / 'mlflow-auth.db'}"
    assert mode(stack.settings.stack_dir / "mlflow-auth.db") == 0o600  # the users' password hashes
    assert auth["mlflow"]["default_permission"] == "READ"
    # Checked passwords are remembered (a cache per worker: right with one worker only).
    assert int(auth["mlflow"]["auth_cache_ttl_seconds"]) > 0 and argv[argv.index("--workers") + 1] == "1"
    # The next start keeps the CSRF key (and the credentials).
    again = stack._mlflow_server("sqlite:///x.db", 5001)
    assert service_environment(again)["MLFLOW_FLASK_SERVER_SECRET_KEY"] == key


def test_workers_and_watcher_get_client_credentials_and_no_server_secret(stack):
    credentials = stack.credentials()
    clients = [s for s in stack.services if s.name.startswith("worker-") or s.name == "watcher"]
    assert len(clients) == 3
    for service in clients:
        env = service_environment(service)
        assert {k: env[k] for k in CLIENT_CREDENTIALS} == credentials, service.name
        assert env["PREFECT_API_URL"] == stack.prefect_api_url and env["MLFLOW_TRACKING_URI"] == stack.mlflow_url
        assert not set(SERVER_ONLY_ENV) & set(env), service.name
        assert not [k for k, v in env.items() if DB_PASSWORD in v], service.name  # SOME_TOOL_DSN went too
        assert not any(DB_PASSWORD in arg for arg in service.argv)


def test_stack_json_and_describe_hold_no_secret(stack):
    recorded = stack.state_file.read_text()
    for secret in secrets_of(stack):
        assert secret not in recorded
    assert json.loads(recorded)["settings"]["postgres"] == "postgresql://keel:***@127.0.0.1:5432"
    loaded = Stack.load(stack.settings.stack_dir)
    assert [s.env_files for s in loaded.services] == [s.env_files for s in stack.services]
    text = loaded.describe()
    assert str(stack.credentials_file) in text and f". {stack.credentials_file}" in text
    for secret in secrets_of(stack):
        assert secret not in text
