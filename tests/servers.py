"""A real MLflow tracking server on loopback for the tests that need one (SQLite backend,
artifacts served by the server), stopped with its workers by its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from flows.prefect_api import wait_for_health
from flows.prefect_api import free_port


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """Yields (url, artifacts folder) of a server keeping its store, artifacts and log in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(folder / "server.log", "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
             "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts")],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(f"{url}/health", process, timeout=90)
        yield url, folder / "artifacts"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its workers, by our own process group
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
