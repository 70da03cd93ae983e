"""Which Prefect API a `keel` command uses: a `keel ui` that left its address book behind when it
was killed (its pid now alive as another process, here this one) is not used; the command starts
its temporary API on the project's database, its output in a log file."""

import json
import os

from flows.prefect_api import TemporaryPrefectAPI, free_port


def test_a_dead_keel_ui_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_HOME", str(tmp_path))
    for name in ("PREFECT_API_URL", "PREFECT_HOME"):
        monkeypatch.delenv(name, raising=False)
    record = tmp_path / ".keel" / "ui.json"
    record.parent.mkdir()
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    record.write_text(json.dumps({"pid": os.getpid(), "prefect": api.removesuffix("/api"), "prefect_api": api}))
    started = TemporaryPrefectAPI().start()
    try:
        assert started.process is not None and started.url != api
        assert "PREFECT_API_URL" not in os.environ
        assert started.log == tmp_path / ".keel" / "logs" / "prefect-temporary-api.log"
        assert "a temporary Prefect API on port" in started.log.read_text()
    finally:
        started.stop()
