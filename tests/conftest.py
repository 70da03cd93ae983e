"""Shared fixtures: small real subsets of the bundled data, and an isolated Keel home."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SIGN_MNIST_CSV = REPO / "data" / "sign-mnist" / "sign_mnist_train.csv.gz"
SIGN_MNIST_CONFIG = REPO / "conf" / "datasets" / "sign-mnist.yaml"

# Keep library and tool chatter off the network and out of the logs.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests use their own embedded stores


@pytest.fixture(scope="session")
def sign_mnist_rows() -> pd.DataFrame:
    """The first 6,000 rows of the real Sign-MNIST training file."""
    return pd.read_csv(SIGN_MNIST_CSV, nrows=6000)


def stratified_rows(frame: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """`per_class` rows of every label, shuffled."""
    parts = [g.sample(n=min(per_class, len(g)), random_state=seed) for _, g in frame.groupby("label")]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="session")
def small_rows(sign_mnist_rows) -> pd.DataFrame:
    """480 real rows, 20 of each of the 24 classes."""
    return stratified_rows(sign_mnist_rows, 20)


def write_dataset_config(folder: Path, csv_path: Path, name: str = "sign-mnist-small", **overrides) -> Path:
    """A copy of the shipped Sign-MNIST config pointing at `csv_path`, with small-data bounds."""
    config = yaml.safe_load(SIGN_MNIST_CONFIG.read_text())
    config["name"] = name
    config["train"] = [{"path": str(csv_path)}]
    config["validation"] = {"min_rows": 50, "max_rows": 100_000}
    config.pop("expectations", None)  # the shipped suite belongs to the full dataset: small copies use the structural one
    config.update(overrides)
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def keel_home(tmp_path, monkeypatch) -> Path:
    """An empty Keel home (data/, mlruns/, reports/) for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KEEL_HOME", str(home))
    return home


@pytest.fixture
def small_config(tmp_path, small_rows) -> Path:
    """A dataset config for the 480-row subset, written as plain CSV."""
    csv = tmp_path / "small.csv"
    small_rows.to_csv(csv, index=False)
    return write_dataset_config(tmp_path, csv)


def images_of(frame: pd.DataFrame) -> np.ndarray:
    return frame.drop(columns=["label"]).to_numpy(dtype=np.uint8).reshape(-1, 28, 28, 1)


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory, small_rows):
    """A model trained 1 epoch on the 480-row subset and registered (v1, champion) in its own
    embedded store. KEEL_HOME points at that store for the whole session unless a test sets
    its own with `keel_home`."""
    from keel.stages import pipeline
    from keel.core.config import TrainConfig
    from keel.tracking.promotion import PromotionPolicy

    home = tmp_path_factory.mktemp("registry-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("KEEL_HOME", str(home))
    csv = home / "small.csv"
    small_rows.to_csv(csv, index=False)
    config = write_dataset_config(home, csv)
    version = pipeline.ingest_stage(str(config))
    train = TrainConfig(epochs=1, batch_size=64)
    run = pipeline.start_run_stage(str(config), version["version_dir"], train)
    trained = pipeline.train_stage(run["run_id"], version["version_dir"], train, run["checkpoint_dir"], progress=False)
    model, _ = pipeline.load_trained(trained["model_path"], for_inference=True)
    metrics = pipeline.evaluate_stage(run["run_id"], version["version_dir"], trained["model_path"])
    registered = pipeline.register_stage(run["run_id"], version["version_dir"], trained["model_path"], metrics)
    verdict = pipeline.promote_stage(version["version_dir"], registered["name"], registered["version"], metrics,
                                     PromotionPolicy(floor=0.0))
    yield {"home": home, "config": config, "version": version, "registered": registered, "model": model,
           "metrics": metrics, "verdict": verdict}
    patch.undo()
