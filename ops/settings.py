"""The team stack's settings: where it lives, its ports and timings (from KEEL_STACK_* variables),
its work pools, and the names of the files in its folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keel.core import settings

# The checkout (or /opt/keel in the image) that holds prefect.yaml, conf/ and the flows.
PROJECT_DIR = Path(os.environ.get("KEEL_PROJECT_DIR") or Path(__file__).resolve().parents[1])

# Work pools and their concurrency limits (None: unlimited). Training goes to `gpu`, one run
# at a time per GPU; scoring and validation go to `cpu`. prefect.yaml and docker-compose.yml
# use the same names (a test checks).
POOLS: dict[str, int | None] = {"gpu": 1, "cpu": None}

CRASH_AUTOMATION = "keel: mark flow runs without heartbeats crashed"

# Files in the stack folder. credentials.env: what a client needs (users, workers, the watcher);
# the *-server.env files: what only the servers need (database URLs, server-side secrets).
CREDENTIALS_FILE = "credentials.env"
PREFECT_SERVER_ENV = "prefect-server.env"
MLFLOW_SERVER_ENV = "mlflow-server.env"
MLFLOW_AUTH_INI = "mlflow-auth.ini"  # MLflow's basic-auth settings (its user database), no secret
MLFLOW_AUTH_DB = "mlflow-auth.db"
CLIENT_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")
STACK_USER = "keel"

# Variables only a server may hold: a worker, the watcher or `prefect deploy` never inherits them.
SERVER_ONLY_ENV = (
    "KEEL_STACK_POSTGRES", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_PASSWORD",
    "PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_REGISTRY_STORE_URI",
    "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)



@dataclass
class StackSettings:
    stack_dir: Path
    postgres: str  # a PostgreSQL server URL, or "sqlite" for SQLite files in stack_dir
    db_prefix: str = "keel"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    heartbeat_seconds: int = 30
    crash_after_seconds: int = 90
    poll_seconds: int = 5
    deploy: bool = True  # deploy prefect.yaml and start the landing-folder watcher
    landing: str = "data/landing/incoming"
    watch_dataset: str = "conf/datasets/sign-mnist.yaml"

    @classmethod
    def from_env(cls, **overrides) -> StackSettings:
        """KEEL_STACK_DIR (default <KEEL_HOME>/.keel-stack), KEEL_STACK_POSTGRES (default
        postgresql://postgres@127.0.0.1:5432; "sqlite" for none; a password in it reaches only
        the servers, through their 0600 env files), KEEL_STACK_DB_PREFIX (keel),
        KEEL_STACK_PREFECT_PORT (4200), KEEL_STACK_MLFLOW_PORT (5000; 0 = any free port),
        KEEL_STACK_HEARTBEAT (30 s), KEEL_STACK_CRASH_AFTER (90 s without a heartbeat marks a
        run crashed), KEEL_STACK_POLL (5 s between a worker's polls), KEEL_STACK_LANDING
        (data/landing/incoming, the folder the watcher watches) and KEEL_STACK_WATCH_DATASET
        (conf/datasets/sign-mnist.yaml, the dataset its files belong to)."""
        env = os.environ
        values = dict(
            stack_dir=Path(env.get("KEEL_STACK_DIR") or settings.home() / ".keel-stack"),
            postgres=env.get("KEEL_STACK_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
            db_prefix=env.get("KEEL_STACK_DB_PREFIX", "keel"),
            prefect_port=int(env.get("KEEL_STACK_PREFECT_PORT", 4200)),
            mlflow_port=int(env.get("KEEL_STACK_MLFLOW_PORT", 5000)),
            heartbeat_seconds=int(env.get("KEEL_STACK_HEARTBEAT", 30)),
            crash_after_seconds=int(env.get("KEEL_STACK_CRASH_AFTER", 90)),
            poll_seconds=int(env.get("KEEL_STACK_POLL", 5)),
            landing=env.get("KEEL_STACK_LANDING", "data/landing/incoming"),
            watch_dataset=env.get("KEEL_STACK_WATCH_DATASET", "conf/datasets/sign-mnist.yaml"),
        )
        values.update(overrides)
        return cls(**values)
