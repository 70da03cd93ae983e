"""Where Keel keeps its state. Read from the environment at call time, never at import."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The project folder that holds data/, mlruns/ and reports/ (KEEL_HOME, else the working directory)."""
    return Path(os.environ.get("KEEL_HOME") or os.getcwd()).resolve()


def versions_dir() -> Path:
    return home() / "data" / "versions"


def curated_dir() -> Path:
    """Accepted incoming batches that join the training data (one folder per dataset)."""
    return home() / "data" / "curated"


def checkpoints_dir() -> Path:
    return home() / "data" / "checkpoints"


def reports_dir() -> Path:
    return home() / "reports"


def mlruns_dir() -> Path:
    return home() / "mlruns"
