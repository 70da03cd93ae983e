"""Where a project's history is shown, and browser links into it.

Embedded mode (no PREFECT_API_URL, no MLFLOW_TRACKING_URI of a server): `keel ui` shows this
project's Prefect runs (a database inside the project, `.keel/prefect/`), its MLflow store
(mlruns/) and its report files (reports/: Data Docs, validation reports) on three loopback
ports, configured or default; its address book is `.keel/ui.json` while it runs. Team mode:
the team's servers. Links written into artifacts (a Prefect artifact naming an MLflow run, an
MLflow tag naming a Prefect flow run) use these addresses, so they open once `keel ui` runs,
whenever the run happened. A link is never a file:// one: a browser on an http page opens none.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from keel.core import settings
from keel.core.secrets import strip_userinfo

# Loopback ports of `keel ui`'s three servers unless KEEL_UI_<NAME>_PORT says otherwise
# (Prefect's and MLflow's own defaults, and the one after Prefect's for the report files).
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000, "files": 4201}
# MLflow 3.17's UI shows an experiment in its GenAI view in a browser that never chose otherwise
# (its "mlflow.workflowType" switch starts at GenAI, whatever the experiment's
# mlflow.experimentKind tag says); a link that names the view opens the training runs.
ML_VIEW = "?workflowType=machine_learning"


def state_dir() -> Path:
    """Keel's own state inside the project (the Prefect database, `keel ui`'s address book)."""
    return settings.home() / ".keel"


def prefect_home() -> Path | None:
    """The PREFECT_HOME of this project's Prefect servers (its database: prefect.db there),
    or None when the user set PREFECT_HOME (then Prefect's own choice stands)."""
    return None if os.environ.get("PREFECT_HOME") else state_dir() / "prefect"


def ui_file() -> Path:
    return state_dir() / "ui.json"


def port(name: str) -> int:
    value = os.environ.get(f"KEEL_UI_{name.upper()}_PORT")
    return int(value) if value else DEFAULT_PORTS[name]


def running_ui() -> dict | None:
    """`keel ui`'s address book when it runs for this project ({"pid", "prefect", "prefect_api",
    "mlflow", "files"}), else None."""
    try:
        record = json.loads(ui_file().read_text())
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


@dataclass(frozen=True)
class UiLinks:
    """Base addresses of the UIs (None: there is none to link to)."""

    prefect: str | None
    mlflow: str | None
    files: str | None

    def flow_run(self, flow_run_id: str) -> str | None:
        return f"{self.prefect}/runs/flow-run/{flow_run_id}" if self.prefect else None

    def mlflow_run(self, experiment_id: str, run_id: str) -> str | None:
        return f"{self.mlflow}/#/experiments/{experiment_id}/runs/{run_id}{ML_VIEW}" if self.mlflow else None

    def mlflow_experiment(self, experiment_id: str) -> str | None:
        """An experiment's training runs (MLflow's UI opens an experiment in its GenAI view otherwise)."""
        return f"{self.mlflow}/#/experiments/{experiment_id}/runs{ML_VIEW}" if self.mlflow else None

    def model_version(self, name: str, version: str | int) -> str | None:
        return f"{self.mlflow}/#/models/{quote(name)}/versions/{version}" if self.mlflow else None

    def report_file(self, path: str | Path) -> str | None:
        """The http address of a file under reports/ (None for one elsewhere)."""
        try:
            relative = Path(path).resolve().relative_to(settings.reports_dir().resolve())
        except ValueError:
            return None
        return f"{self.files}/{quote(relative.as_posix())}" if self.files else None


def links() -> UiLinks:
    """The addresses this project's runs are shown at: the team's servers in team mode, else
    those of `keel ui` (running, or where it will run: the configured ports)."""
    running = running_ui() or {}
    api = os.environ.get("PREFECT_API_URL")
    if api and api != running.get("prefect_api"):  # a team server
        prefect = os.environ.get("PREFECT_UI_URL") or strip_userinfo(api).removesuffix("/").removesuffix("/api")
    else:
        prefect = running.get("prefect") or f"http://127.0.0.1:{port('prefect')}"
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith(("http://", "https://")) and tracking != running.get("mlflow"):
        mlflow = strip_userinfo(tracking).rstrip("/")
    else:
        mlflow = running.get("mlflow") or f"http://127.0.0.1:{port('mlflow')}"
    files = running.get("files") or (None if api and not running else f"http://127.0.0.1:{port('files')}")
    return UiLinks(prefect, mlflow, files)


def png_data_uri(path: str | Path) -> str:
    """A PNG as a data: address, shown by both Prefect UIs' markdown without any server."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
