"""Where a project's runs are shown (keel.core.ui_links): the team's servers in team mode, else
`keel ui`'s addresses, running or configured; never a file:// link."""

import json
import os

from keel.core.ui_links import links, png_data_uri, prefect_home, running_ui


def test_embedded_links_name_keel_ui_default_and_configured_ports(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_HOME", str(tmp_path))
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME", "KEEL_UI_MLFLOW_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEEL_UI_PREFECT_PORT", "4300")
    shown = links()
    assert shown.flow_run("abc") == "http://127.0.0.1:4300/runs/flow-run/abc"
    assert shown.mlflow_run("1", "r") == "http://127.0.0.1:5000/#/experiments/1/runs/r?workflowType=machine_learning"
    assert shown.mlflow_experiment("1") == "http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"
    assert shown.model_version("keel sign", 2) == "http://127.0.0.1:5000/#/models/keel%20sign/versions/2"
    docs = tmp_path / "reports" / "validation" / "x y" / "docs" / "index.html"
    assert shown.report_file(docs) == "http://127.0.0.1:4201/validation/x%20y/docs/index.html"
    assert shown.report_file(tmp_path / "elsewhere" / "index.html") is None  # not served: no link
    assert prefect_home() == tmp_path / ".keel" / "prefect"
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "mine"))
    assert prefect_home() is None  # the user's choice stands


def test_team_mode_links_name_the_team_servers_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", "https://prefect.team.example/api")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://bob:s3cret@mlflow.team.example/")
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    shown = links()
    assert shown.flow_run("abc") == "https://prefect.team.example/runs/flow-run/abc"
    assert shown.mlflow_run("1", "r").startswith("https://mlflow.team.example/#/experiments/1/runs/r?")
    assert "s3cret" not in str(shown) and shown.files is None


def test_a_running_keel_ui_is_used_and_a_dead_one_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_HOME", str(tmp_path))
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    record = tmp_path / ".keel" / "ui.json"
    record.parent.mkdir()
    urls = {"prefect": "http://127.0.0.1:6001", "prefect_api": "http://127.0.0.1:6001/api",
            "mlflow": "http://127.0.0.1:6002", "files": "http://127.0.0.1:6003"}
    record.write_text(json.dumps({"pid": os.getpid(), **urls}))
    assert running_ui()["prefect_api"] == urls["prefect_api"]
    monkeypatch.setenv("PREFECT_API_URL", urls["prefect_api"])  # as a command sets it while keel ui runs
    assert links().flow_run("x") == "http://127.0.0.1:6001/runs/flow-run/x"
    assert links().report_file(tmp_path / "reports" / "a.html") == "http://127.0.0.1:6003/a.html"
    record.write_text(json.dumps({"pid": 2 ** 22 + 7, **urls}))  # no such process
    assert running_ui() is None


def test_a_png_becomes_a_data_address(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nrest")
    assert png_data_uri(png) == "data:image/png;base64,iVBORw0KGgpyZXN0"
