"""keel.core.secrets: what redact() masks and leaves alone, exceptions masked in place, and the
places in the library that use it (errors, the version store, artifact links, MLflow params)."""

from __future__ import annotations

import json
import logging

import pytest

from keel.core.errors import ConfigError, DatasetError
from keel.core.io import refuse_credentials
from keel.core.secrets import (
    install_log_redaction,
    redact,
    redact_data,
    redact_exception,
    strip_userinfo,
)

MASKED = [
    ("http://user:p@ss@host/x", "http://user:***@host/x"),
    ("postgresql+psycopg2://keel:s3cret@db:5432/mlflow", "postgresql+psycopg2://keel:***@db:5432/mlflow"),
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("MlflowException('API request to http://u:PW@127.0.0.1:1/api')", "MlflowException('API request to http://u:***@127.0.0.1:1/api')"),
    ("a,http://a:b@c.com,http://d:e@f.com", "a,http://a:***@c.com,http://d:***@f.com"),
    ("Authorization: Basic dXNlcjpwdw==", "Authorization: Basic ***"),
    ("{'Authorization': 'Bearer abc.def'}", "{'Authorization': 'Bearer ***'}"),
    ("{'password': 'hunter22', 'aws_secret_access_key': 'zzz', 'region': 'eu'}",
     "{'password': '***', 'aws_secret_access_key': '***', 'region': 'eu'}"),
    ("https://acct.blob.core.windows.net/c/f.csv?sp=r&sig=abc%2Bdef", "https://acct.blob.core.windows.net/c/f.csv?sp=r&sig=***"),
    ("s3://b/x?X-Amz-Security-Token=tok&client_secret=cs", "s3://b/x?X-Amz-Security-Token=***&client_secret=***"),
    ("host=db user=keel password=s3cret dbname=x", "host=db user=keel password=*** dbname=x"),
]
KEPT = ["http://127.0.0.1:5000/path see http://host:5000 and user@example.com", "ftp://anonymous@host/x",
        "author=me&keyword=x&monkey=y", "/data/sign-mnist/sign_mnist_train.csv.gz", "memory://landing/batch.csv"]


@pytest.mark.parametrize(("text", "masked"), MASKED)
def test_redact_masks_credentials_and_is_idempotent(text, masked):
    assert redact(text) == masked
    assert redact(masked) == masked


@pytest.mark.parametrize("text", KEPT)
def test_redact_leaves_ordinary_text_alone(text):
    assert redact(text) == text


def test_redact_data_masks_values_of_secret_keys():
    assert redact_data({"password": "x", "path": "http://u:pw@h/x", "author": "me", "count": 3, "items": ["a:b@c"]}) == \
        {"password": "***", "path": "http://u:***@h/x", "author": "me", "count": 3, "items": ["a:b@c"]}


def test_strip_userinfo_removes_the_credentials_part():
    assert strip_userinfo("http://user:pw@127.0.0.1:5000/get-artifact?path=a/b.png&run_uuid=1") == \
        "http://127.0.0.1:5000/get-artifact?path=a/b.png&run_uuid=1"
    assert strip_userinfo("file:///x/y.png") == "file:///x/y.png"


def test_exceptions_are_masked_in_place_with_their_chain():
    from mlflow.exceptions import MlflowException

    try:
        try:
            raise FileNotFoundError(2, "No such file", "http://u:PLANTED@h/x")
        except FileNotFoundError:
            raise MlflowException("API request to http://u:PLANTED@h/api failed") from None
    except MlflowException as exc:
        assert redact_exception(exc) is exc
        assert "PLANTED" not in f"{exc} {exc!r} {exc.message} {exc.__context__}"
        assert "http://u:***@h/api" in str(exc) and "http://u:***@h/x" in str(exc.__context__)


def test_keel_errors_are_masked_when_made():
    error = DatasetError("http://user:PLANTED@host/data.csv: file not found; check the path in the dataset config")
    assert str(error) == "http://user:***@host/data.csv: file not found; check the path in the dataset config"
    import pickle

    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_refuse_credentials_names_the_url_masked_and_where_credentials_go():
    refuse_credentials("s3://bucket/landing/", "input_path")
    refuse_credentials(None, "labels_path")
    with pytest.raises(ConfigError) as error:
        refuse_credentials("https://user:PLANTED@host/batch.csv", "input_path")
    assert "PLANTED" not in str(error.value) and "https://user:***@host/batch.csv" in str(error.value)
    assert "FSSPEC_" in str(error.value)


def test_log_records_and_their_exceptions_are_masked(caplog):
    install_log_redaction()
    logger = logging.getLogger("keel.test.secrets")
    try:
        raise RuntimeError("connecting to http://user:PLANTED@db:5432 failed")
    except RuntimeError:
        with caplog.at_level(logging.INFO, logger="keel.test.secrets"):
            logger.exception("tracking URI %s", "http://user:PLANTED@mlflow:5000")
    text = caplog.text
    assert "PLANTED" not in text and "http://user:***@mlflow:5000" in text and "http://user:***@db:5432" in text


def test_artifact_links_carry_no_credentials(monkeypatch):
    from keel.tracking import client as tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:PLANTED@127.0.0.1:5000")
    url = tracking.artifact_url("abc", "/tmp/x/evaluation_confusion_matrix.png", "evaluation")
    assert url == "http://127.0.0.1:5000/get-artifact?path=evaluation/evaluation_confusion_matrix.png&run_uuid=abc"


def test_mlflow_params_are_masked():
    from keel.core.config import TrainConfig
    from keel.stages.runs import _params

    params = {p.key: p.value for p in _params(TrainConfig(weights="https://user:PLANTED@host/w.pth"), "d", "v")}
    assert params["weights"] == "https://user:***@host/w.pth"


def test_version_store_names_sources_without_credentials(tmp_path, small_rows):
    """A source URL with a password and a token: meta.json and the profile name it masked; the
    version id (the content address) is the one the same bytes get from a local path."""
    import http.server
    import threading

    from keel.core.config import load_dataset_config
    from keel.data.versions import DatasetVersion
    from keel.modalities import ingest
    from tests.conftest import write_dataset_config

    body = small_rows.to_csv(index=False).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "remote").mkdir()
    try:
        url = f"http://user:PLANTED@127.0.0.1:{server.server_address[1]}/small.csv?token=PLANTED2"
        remote = ingest(load_dataset_config(write_dataset_config(tmp_path / "remote", url)), tmp_path / "versions")
    finally:
        server.shutdown()
        server.server_close()
    local_csv = tmp_path / "small.csv"
    local_csv.write_bytes(body)
    local = ingest(load_dataset_config(write_dataset_config(tmp_path, local_csv)), tmp_path / "other-versions")
    assert remote.version.id == local.version.id
    meta = (remote.version.path / "meta.json").read_text()
    assert "PLANTED" not in meta
    assert json.loads(meta)["sources"][0]["path"].startswith("http://user:***@127.0.0.1:")
    profile = DatasetVersion(remote.version.path).profile()
    assert set(profile["file"]) == {"small.csv"}
    assert not any(b"PLANTED" in p.read_bytes() for p in remote.version.path.rglob("*") if p.is_file())


def test_each_key_of_a_list_of_secrets_is_masked(monkeypatch):
    monkeypatch.setenv("KEEL_SIGNING_KEY_PREVIOUS", "old-key-one-0123456789,old-key-two-0123456789")
    assert redact("verified with old-key-two-0123456789 only") == "verified with *** only"
