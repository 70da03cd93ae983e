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


def signing_key() -> str | None:
    """The team key that signs the manifest of every model version Keel registers and that
    every load checks (KEEL_SIGNING_KEY; a shared secret), or None when unset."""
    return os.environ.get("KEEL_SIGNING_KEY") or None


def previous_signing_keys() -> list[str]:
    """Retired team keys still accepted when verifying versions signed before a rotation
    (KEEL_SIGNING_KEY_PREVIOUS, comma separated); never used to sign."""
    return [key.strip() for key in os.environ.get("KEEL_SIGNING_KEY_PREVIOUS", "").split(",") if key.strip()]
