"""`keel ui`: this project's history in a browser, on loopback ports.

Three servers, each only when the project has no team server for it (keel.core.ui_links):
- the Prefect server with its UI, on the project's own database (.keel/prefect/prefect.db: the
  database every `keel` command's flow runs are kept in), its UI told where its API is;
- the MLflow UI (`mlflow server`) on the embedded store in mlruns/ (artifacts served from it);
- a static file server for reports/ (Data Docs, validation reports), which Prefect's link
  artifacts point at.
While they run, `.keel/ui.json` says where (so `keel` commands send their flow runs to this
Prefect server instead of starting a temporary one); Ctrl-C, SIGTERM or `keel ui --stop` stops
exactly what was started and removes it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from keel.core import settings
from keel.core.atomic import atomic_path
from keel.core.errors import KeelError
from keel.core.ui_links import UiLinks, links, port, prefect_home, running_ui, ui_file
from keel.tracking.client import client, embedded, tracking_uri
from ops.processes import Service, alive, port_in_use, spawn, stop, wait_healthy


@dataclass
class ProjectUI:
    """The servers `keel ui` started for this project, and where each one is."""

    services: list[Service] = field(default_factory=list)
    urls: dict = field(default_factory=dict)
    files_server: http.server.ThreadingHTTPServer | None = None

    def start(self, timeout: float = 180.0) -> ProjectUI:
        if running_ui() is not None:
            raise KeelError(f"keel ui already runs for {settings.home()} (see {ui_file()}); "
                            "`keel ui --stop` stops it")
        team = links()
        try:
            if not os.environ.get("PREFECT_API_URL"):
                base = self._spawn(_prefect_server(port("prefect")), "prefect")
                self.urls.update(prefect=base, prefect_api=f"{base}/api")
            if embedded():
                self.urls["mlflow"] = self._spawn(_mlflow_server(port("mlflow")), "mlflow")
            self._serve_files(port("files"))
            for service in self.services:
                wait_healthy(service, timeout)
        except BaseException:
            self.stop()
            raise
        self.urls.setdefault("prefect", team.prefect)
        self.urls.setdefault("mlflow", team.mlflow)
        self._record()
        return self

    def _spawn(self, service: Service, name: str) -> str:
        """Starts `service` (its port checked free first); its base address."""
        number = port(name)
        free(number, name)
        spawn(service)
        self.services.append(service)
        return f"http://127.0.0.1:{number}"

    def _serve_files(self, number: int) -> None:
        free(number, "files")
        folder = settings.reports_dir()
        folder.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietFiles, directory=str(folder))
        self.files_server = http.server.ThreadingHTTPServer(("127.0.0.1", number), handler)
        threading.Thread(target=self.files_server.serve_forever, name="keel-ui-files", daemon=True).start()
        self.urls["files"] = f"http://127.0.0.1:{number}"

    def _record(self) -> None:
        record = {"pid": os.getpid(), **self.urls,
                  "services": [{"name": s.name, "pid": s.pid, "start_time": s.start_time, "log": s.log}
                               for s in self.services]}
        ui_file().parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(ui_file()) as tmp:
            tmp.write_text(json.dumps(record, indent=2))

    def describe(self) -> str:
        shown = UiLinks(self.urls.get("prefect"), self.urls.get("mlflow"), self.urls.get("files"))
        return "\n".join([f"Keel UI for {settings.home()}",
                          f"  Prefect UI   {shown.prefect}  (flow runs, their logs and artifacts)",
                          f"  MLflow UI    {shown.mlflow}  (runs, metrics, registered models)",
                          *[f"    {name:<22} {shown.mlflow_experiment(number)}" for name, number in _experiments()],
                          f"  reports      {shown.files}/  (Data Docs, validation reports)",
                          "Ctrl-C or `keel ui --stop` stops it."])

    def stop(self) -> None:
        if self.files_server is not None:
            self.files_server.shutdown()
            self.files_server.server_close()
            self.files_server = None
        for service in reversed(self.services):
            stop(service, timeout=15)
        self.services = []
        try:
            if json.loads(ui_file().read_text()).get("pid") == os.getpid():
                ui_file().unlink()
        except (OSError, ValueError):
            pass


def _experiments() -> list[tuple[str, str]]:
    """(name, id) of the store's experiments, but MLflow's empty Default."""
    try:
        found = client().search_experiments()
    except Exception:  # noqa: BLE001 -- a list for the terminal: the UI shows them anyway
        return []
    return [(e.name, e.experiment_id) for e in found if e.name != "Default"]


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Report files, without a log line per request on the terminal."""

    def log_message(self, format, *args) -> None:  # noqa: A002 -- the base class's name
        pass


def free(number: int, name: str) -> None:
    if port_in_use(number):
        raise KeelError(f"port {number} is taken: set KEEL_UI_{name.upper()}_PORT to a free port for keel ui's {name} server")


def _logs() -> Path:
    return ui_file().parent / "logs"


def _prefect_server(number: int) -> Service:
    home = prefect_home() or Path(os.environ["PREFECT_HOME"])
    env = {"PREFECT_HOME": str(home), "PREFECT_API_URL": None, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "true", "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{number}/api",
           # The UI's files are copied here on first start, not into the installed package.
           "PREFECT_SERVER_UI_STATIC_DIRECTORY": str(home / "ui")}
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(number)]
    return Service("prefect-server", argv, str(_logs() / "prefect-server.log"), env,
                   health=f"http://127.0.0.1:{number}/api/health")


def _mlflow_server(number: int) -> Service:
    argv = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", tracking_uri(),
            "--host", "127.0.0.1", "--port", str(number), "--workers", "1"]
    # Job execution off: the default server also runs a job runner (~2.4 GB in all).
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_TRACKING_URI": None}
    return Service("mlflow-server", argv, str(_logs() / "mlflow-server.log"), env,
                   health=f"http://127.0.0.1:{number}/health")


def serve_until_stopped(ui: ProjectUI) -> None:
    """Blocks until SIGINT or SIGTERM, then stops what `ui` started."""
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        while not stopping.wait(1.0):
            dead = [s.name for s in ui.services if not alive(s)]
            if dead:
                print(f"keel ui: {', '.join(dead)} exited; see {_logs()}", file=sys.stderr)
                break
    finally:
        ui.stop()


def stop_running(timeout: float = 30.0) -> bool:
    """`keel ui --stop`: asks the running `keel ui` to stop (SIGTERM) and waits; False when none runs."""
    record = running_ui()
    if record is None:
        return False
    os.kill(int(record["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_ui() is not None:
        time.sleep(0.2)
    if running_ui() is not None:
        raise KeelError(f"keel ui (pid {record['pid']}) did not stop within {timeout:.0f} s")
    return True
